package e2e

// The jobs of TestBillingExactMixed: one kind of request a job, each sent
// through the SDK and checked against what the client should see.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/metask/caddy-ai-gateway/internal/gwtest"
)

type btKind int

const (
	btChatJSON btKind = iota
	btChatStream
	btChatStreamUsage
	btChatStreamCancel
	btChatStreamCut
	btChatError
	btStreamError
	btChatNoUsage
	btStreamNoUsage
	btGzip
	btEmbeddings
	btResponses
	btResponsesStream
	btResponsesCut
	btCompletions
	btCompletionsStream
	btNumKinds
)

var btKindNames = [...]string{"chat", "chat-stream", "chat-stream-usage", "chat-stream-cancel", "chat-stream-cut",
	"chat-500", "stream-503", "chat-no-usage", "stream-no-usage", "gzip", "embeddings", "responses",
	"responses-stream", "responses-cut", "completions", "completions-stream"}

func (k btKind) String() string { return btKindNames[k] }

// outcome classes of a request's ledger row
const (
	btExact     = "exact"
	btFree      = "free"
	btEstimated = "estimated"
)

func (k btKind) class() string {
	switch k {
	case btChatError, btStreamError:
		return btFree
	case btChatStreamCancel, btChatStreamCut, btChatNoUsage, btStreamNoUsage, btResponsesCut:
		return btEstimated
	}
	return btExact
}

type btJob struct {
	id     string
	kind   btKind
	key    int
	model  string
	usage  gwtest.Usage
	cut    int
	status int
}

type btKey struct {
	account, id, secret string
	client              openai.Client
}

// btRun performs one job through the SDK and returns what the client saw
// that contradicts the expectation ("" when all is well).
func btRun(ctx context.Context, j btJob, c openai.Client) string {
	u := j.usage
	call := &btCall{ctx: ctx, j: j, c: c, opts: []option.RequestOption{
		option.WithHeader(gwtest.HeaderRequestID, j.id),
		option.WithHeader(gwtest.HeaderUsage, fmt.Sprintf("%d,%d,%d,%d", u.Prompt, u.Completion, u.Cached, u.Reasoning)),
	}}
	return btRunners[j.kind](call)
}

// btRunners performs each kind of job (see btRun).
var btRunners = [btNumKinds]func(*btCall) string{
	btChatJSON:          btRunChatJSON,
	btGzip:              btRunChatJSON,
	btChatNoUsage:       btRunChatNoUsage,
	btChatStream:        btRunChatStream,
	btStreamNoUsage:     btRunChatStream,
	btChatStreamUsage:   btRunChatStreamUsage,
	btChatStreamCancel:  btRunChatStreamCancel,
	btChatStreamCut:     btRunChatStreamCut,
	btChatError:         btRunChatError,
	btStreamError:       btRunStreamError,
	btEmbeddings:        btRunEmbeddings,
	btResponses:         btRunResponses,
	btResponsesStream:   btRunResponsesStream,
	btResponsesCut:      btRunResponsesStream,
	btCompletions:       btRunCompletions,
	btCompletionsStream: btRunCompletionsStream,
}

// btCall is one job under way: its context, the client, and the options
// every request of the job sends (the request id and the usage the mock
// reports).
type btCall struct {
	ctx  context.Context
	j    btJob
	c    openai.Client
	opts []option.RequestOption
}

// chatParams is the chat request of a job.
func (b *btCall) chatParams() openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{Model: b.j.model, Messages: btChatMsgs}
}

// checkChatUsage compares the usage the client saw with the job's.
func (b *btCall) checkChatUsage(got openai.CompletionUsage) string {
	u := b.j.usage
	if got.PromptTokens != int64(u.Prompt) || got.CompletionTokens != int64(u.Completion) ||
		got.PromptTokensDetails.CachedTokens != int64(u.Cached) || got.CompletionTokensDetails.ReasoningTokens != int64(u.Reasoning) {
		return fmt.Sprintf("client saw usage %+v, mock sent %+v", got, u)
	}
	return ""
}

// streamChat reads a chat stream; it returns the content, the chunks that
// have a "usage" member (null included) and the stream's error. cancel, if
// set, is called after the first content chunk.
func (b *btCall) streamChat(p openai.ChatCompletionNewParams, cancel func(), o ...option.RequestOption) (string, []openai.ChatCompletionChunk, error) {
	s := b.c.Chat.Completions.NewStreaming(b.ctx, p, append(b.opts, o...)...)
	defer s.Close()
	var text strings.Builder
	var usage []openai.ChatCompletionChunk
	for s.Next() {
		ch := s.Current()
		if strings.Contains(ch.RawJSON(), `"usage"`) {
			usage = append(usage, ch)
		}
		if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			text.WriteString(ch.Choices[0].Delta.Content)
			if cancel != nil {
				cancel()
				return text.String(), usage, nil
			}
		}
	}
	return text.String(), usage, s.Err()
}

// btRunChatJSON: a chat completion (btGzip: gzipped by the provider).
func btRunChatJSON(b *btCall) string {
	o := b.opts
	if b.j.kind == btGzip {
		o = append(o, option.WithHeader(gwtest.HeaderGzip, "1"))
	}
	resp, err := b.c.Chat.Completions.New(b.ctx, b.chatParams(), o...)
	if err != nil {
		return err.Error()
	}
	if resp.Choices[0].Message.Content != "Hello from the mock provider." {
		return "content " + resp.Choices[0].Message.Content
	}
	return b.checkChatUsage(resp.Usage)
}

// btRunChatNoUsage: a chat completion whose answer reports no usage.
func btRunChatNoUsage(b *btCall) string {
	resp, err := b.c.Chat.Completions.New(b.ctx, b.chatParams(), append(b.opts, option.WithHeader(gwtest.HeaderNoUsage, "1"))...)
	if err != nil {
		return err.Error()
	}
	if resp.Usage.TotalTokens != 0 || resp.Choices[0].Message.Content == "" {
		return fmt.Sprintf("no-usage answer: %+v", resp)
	}
	return ""
}

// btRunChatStream: a chat stream without the client's include_usage
// (btStreamNoUsage: the provider reports no usage either).
func btRunChatStream(b *btCall) string {
	var o []option.RequestOption
	if b.j.kind == btStreamNoUsage {
		o = append(o, option.WithHeader(gwtest.HeaderNoUsage, "1"))
	}
	text, usage, err := b.streamChat(b.chatParams(), nil, o...)
	if err != nil {
		return err.Error()
	}
	if text != btStreamText || len(usage) != 0 {
		return fmt.Sprintf("stream text %q, %d usage chunks reached a client that asked for none", text, len(usage))
	}
	return ""
}

// btRunChatStreamUsage: a chat stream with the client's include_usage.
func btRunChatStreamUsage(b *btCall) string {
	p := b.chatParams()
	p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	text, usage, err := b.streamChat(p, nil)
	if err != nil {
		return err.Error()
	}
	// Every chunk has usage, null but in the last one (as OpenAI sends).
	var reported []openai.ChatCompletionChunk
	for _, ch := range usage {
		if !strings.Contains(ch.RawJSON(), `"usage":null`) {
			reported = append(reported, ch)
		}
	}
	if text != btStreamText || len(reported) != 1 || len(usage) != len(gwtest.StreamPieces)+3 {
		return fmt.Sprintf("stream text %q, %d chunks with usage, %d not null", text, len(usage), len(reported))
	}
	return b.checkChatUsage(reported[0].Usage)
}

// btRunChatStreamCancel: a slow chat stream the client cancels after its
// first content.
func btRunChatStreamCancel(b *btCall) string {
	cctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	cb := *b
	cb.ctx = cctx
	text, _, _ := cb.streamChat(cb.chatParams(), cancel, option.WithHeader(gwtest.HeaderDelayMs, "40"))
	if text != gwtest.StreamPieces[0] {
		return "first content " + text
	}
	return ""
}

// btRunChatStreamCut: a chat stream the provider cuts after j.cut pieces.
func btRunChatStreamCut(b *btCall) string {
	text, _, err := b.streamChat(b.chatParams(), nil, option.WithHeader(gwtest.HeaderCut, strconv.Itoa(b.j.cut)))
	if err == nil {
		return "stream cut by the provider ended without an error at the client"
	}
	if want := strings.Join(gwtest.StreamPieces[:b.j.cut], ""); text != want {
		return fmt.Sprintf("cut stream text %q, want %q", text, want)
	}
	return ""
}

// btRunChatError: a chat completion the provider answers with j.status.
func btRunChatError(b *btCall) string {
	_, err := b.c.Chat.Completions.New(b.ctx, b.chatParams(), append(b.opts, option.WithHeader(gwtest.HeaderStatus, strconv.Itoa(b.j.status)))...)
	return btWantStatus(err, b.j.status)
}

// btRunStreamError: a chat stream the provider answers with j.status.
func btRunStreamError(b *btCall) string {
	_, _, err := b.streamChat(b.chatParams(), nil, option.WithHeader(gwtest.HeaderStatus, strconv.Itoa(b.j.status)))
	return btWantStatus(err, b.j.status)
}

// btWantStatus wants err to be the provider's error with status.
func btWantStatus(err error, status int) string {
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != status {
		return fmt.Sprintf("want a %d from the provider, got %v", status, err)
	}
	return ""
}

// btRunEmbeddings: embeddings of two texts.
func btRunEmbeddings(b *btCall) string {
	resp, err := b.c.Embeddings.New(b.ctx, openai.EmbeddingNewParams{
		Model: openai.EmbeddingModel(b.j.model),
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"first text", "second"}},
	}, b.opts...)
	if err != nil {
		return err.Error()
	}
	if resp.Usage.PromptTokens != int64(b.j.usage.Prompt) || len(resp.Data) != 1 {
		return fmt.Sprintf("embeddings usage %+v", resp.Usage)
	}
	return ""
}

// btRunResponses: a Responses API request.
func btRunResponses(b *btCall) string {
	resp, err := b.c.Responses.New(b.ctx, responses.ResponseNewParams{
		Model: b.j.model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")},
		MaxOutputTokens: openai.Int(500),
	}, b.opts...)
	if err != nil {
		return err.Error()
	}
	return btCheckResponseUsage(resp.Usage, b.j.usage, resp.OutputText())
}

// btRunResponsesStream: a Responses API stream (btResponsesCut: cut by the
// provider after j.cut pieces).
func btRunResponsesStream(b *btCall) string {
	o := b.opts
	if b.j.kind == btResponsesCut {
		o = append(o, option.WithHeader(gwtest.HeaderCut, strconv.Itoa(b.j.cut)))
	}
	s := b.c.Responses.NewStreaming(b.ctx, responses.ResponseNewParams{
		Model: b.j.model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")},
	}, o...)
	defer s.Close()
	var text strings.Builder
	var completed *responses.Response
	for s.Next() {
		ev := s.Current()
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed":
			r := ev.Response
			completed = &r
		}
	}
	if b.j.kind == btResponsesCut {
		return btCheckResponsesCut(s.Err(), completed, text.String(), b.j.cut)
	}
	if s.Err() != nil {
		return s.Err().Error()
	}
	if completed == nil {
		return "no response.completed event"
	}
	if text.String() != btStreamText {
		return "responses stream text " + text.String()
	}
	return btCheckResponseUsage(completed.Usage, b.j.usage, btStreamText)
}

// btCheckResponsesCut wants a Responses stream cut after cut pieces to end
// with an error, without response.completed, after the text sent so far.
func btCheckResponsesCut(err error, completed *responses.Response, text string, cut int) string {
	if err == nil || completed != nil {
		return "responses stream cut by the provider ended cleanly"
	}
	if want := strings.Join(gwtest.StreamPieces[:cut], ""); text != want {
		return fmt.Sprintf("cut text %q, want %q", text, want)
	}
	return ""
}

// btRunCompletions: a legacy completion.
func btRunCompletions(b *btCall) string {
	resp, err := b.c.Completions.New(b.ctx, openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModel(b.j.model),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say hello")},
	}, b.opts...)
	if err != nil {
		return err.Error()
	}
	if resp.Choices[0].Text != "Hello from the mock provider." {
		return "completion text " + resp.Choices[0].Text
	}
	return b.checkChatUsage(resp.Usage)
}

// btRunCompletionsStream: a legacy completion stream, without the client's
// include_usage.
func btRunCompletionsStream(b *btCall) string {
	s := b.c.Completions.NewStreaming(b.ctx, openai.CompletionNewParams{
		Model:     openai.CompletionNewParamsModel(b.j.model),
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say hello")},
		MaxTokens: openai.Int(64),
	}, b.opts...)
	defer s.Close()
	var text strings.Builder
	for s.Next() {
		ch := s.Current()
		if strings.Contains(ch.RawJSON(), `"usage"`) {
			return "the usage chunk the gateway asked for reached the client"
		}
		if len(ch.Choices) > 0 {
			text.WriteString(ch.Choices[0].Text)
		}
	}
	if s.Err() != nil {
		return s.Err().Error()
	}
	if text.String() != btStreamText {
		return "completions stream text " + text.String()
	}
	return ""
}

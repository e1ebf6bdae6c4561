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
	opts := []option.RequestOption{
		option.WithHeader(gwtest.HeaderRequestID, j.id),
		option.WithHeader(gwtest.HeaderUsage, fmt.Sprintf("%d,%d,%d,%d", u.Prompt, u.Completion, u.Cached, u.Reasoning)),
	}
	chatParams := openai.ChatCompletionNewParams{Model: j.model, Messages: btChatMsgs}
	checkChatUsage := func(got openai.CompletionUsage) string {
		if got.PromptTokens != int64(u.Prompt) || got.CompletionTokens != int64(u.Completion) ||
			got.PromptTokensDetails.CachedTokens != int64(u.Cached) || got.CompletionTokensDetails.ReasoningTokens != int64(u.Reasoning) {
			return fmt.Sprintf("client saw usage %+v, mock sent %+v", got, u)
		}
		return ""
	}
	// streamChat reads a chat stream; it returns the content, the chunks
	// that have a "usage" member (null included) and the stream's error.
	// cancel, if set, is called after the first content chunk.
	streamChat := func(p openai.ChatCompletionNewParams, cancel func(), o ...option.RequestOption) (string, []openai.ChatCompletionChunk, error) {
		s := c.Chat.Completions.NewStreaming(ctx, p, append(opts, o...)...)
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

	switch j.kind {
	case btChatJSON, btGzip:
		o := opts
		if j.kind == btGzip {
			o = append(o, option.WithHeader(gwtest.HeaderGzip, "1"))
		}
		resp, err := c.Chat.Completions.New(ctx, chatParams, o...)
		if err != nil {
			return err.Error()
		}
		if resp.Choices[0].Message.Content != "Hello from the mock provider." {
			return "content " + resp.Choices[0].Message.Content
		}
		return checkChatUsage(resp.Usage)
	case btChatNoUsage:
		resp, err := c.Chat.Completions.New(ctx, chatParams, append(opts, option.WithHeader(gwtest.HeaderNoUsage, "1"))...)
		if err != nil {
			return err.Error()
		}
		if resp.Usage.TotalTokens != 0 || resp.Choices[0].Message.Content == "" {
			return fmt.Sprintf("no-usage answer: %+v", resp)
		}
	case btChatStream, btStreamNoUsage:
		var o []option.RequestOption
		if j.kind == btStreamNoUsage {
			o = append(o, option.WithHeader(gwtest.HeaderNoUsage, "1"))
		}
		text, usage, err := streamChat(chatParams, nil, o...)
		if err != nil {
			return err.Error()
		}
		if text != btStreamText || len(usage) != 0 {
			return fmt.Sprintf("stream text %q, %d usage chunks reached a client that asked for none", text, len(usage))
		}
	case btChatStreamUsage:
		p := chatParams
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		text, usage, err := streamChat(p, nil)
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
		return checkChatUsage(reported[0].Usage)
	case btChatStreamCancel:
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ctx = cctx
		text, _, _ := streamChat(chatParams, cancel, option.WithHeader(gwtest.HeaderDelayMs, "40"))
		if text != gwtest.StreamPieces[0] {
			return "first content " + text
		}
	case btChatStreamCut:
		text, _, err := streamChat(chatParams, nil, option.WithHeader(gwtest.HeaderCut, strconv.Itoa(j.cut)))
		if err == nil {
			return "stream cut by the provider ended without an error at the client"
		}
		if want := strings.Join(gwtest.StreamPieces[:j.cut], ""); text != want {
			return fmt.Sprintf("cut stream text %q, want %q", text, want)
		}
	case btChatError:
		_, err := c.Chat.Completions.New(ctx, chatParams, append(opts, option.WithHeader(gwtest.HeaderStatus, strconv.Itoa(j.status)))...)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != j.status {
			return fmt.Sprintf("want a %d from the provider, got %v", j.status, err)
		}
	case btStreamError:
		_, _, err := streamChat(chatParams, nil, option.WithHeader(gwtest.HeaderStatus, strconv.Itoa(j.status)))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != j.status {
			return fmt.Sprintf("want a %d from the provider, got %v", j.status, err)
		}
	case btEmbeddings:
		resp, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: openai.EmbeddingModel(j.model),
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"first text", "second"}},
		}, opts...)
		if err != nil {
			return err.Error()
		}
		if resp.Usage.PromptTokens != int64(u.Prompt) || len(resp.Data) != 1 {
			return fmt.Sprintf("embeddings usage %+v", resp.Usage)
		}
	case btResponses:
		resp, err := c.Responses.New(ctx, responses.ResponseNewParams{
			Model: j.model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")},
			MaxOutputTokens: openai.Int(500),
		}, opts...)
		if err != nil {
			return err.Error()
		}
		return btCheckResponseUsage(resp.Usage, u, resp.OutputText())
	case btResponsesStream, btResponsesCut:
		o := opts
		if j.kind == btResponsesCut {
			o = append(o, option.WithHeader(gwtest.HeaderCut, strconv.Itoa(j.cut)))
		}
		s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: j.model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say hello")},
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
		if j.kind == btResponsesCut {
			if s.Err() == nil || completed != nil {
				return "responses stream cut by the provider ended cleanly"
			}
			if want := strings.Join(gwtest.StreamPieces[:j.cut], ""); text.String() != want {
				return fmt.Sprintf("cut text %q, want %q", text.String(), want)
			}
			return ""
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
		return btCheckResponseUsage(completed.Usage, u, btStreamText)
	case btCompletions:
		resp, err := c.Completions.New(ctx, openai.CompletionNewParams{
			Model:  openai.CompletionNewParamsModel(j.model),
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say hello")},
		}, opts...)
		if err != nil {
			return err.Error()
		}
		if resp.Choices[0].Text != "Hello from the mock provider." {
			return "completion text " + resp.Choices[0].Text
		}
		return checkChatUsage(resp.Usage)
	case btCompletionsStream:
		s := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
			Model:     openai.CompletionNewParamsModel(j.model),
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say hello")},
			MaxTokens: openai.Int(64),
		}, opts...)
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
	}
	return ""
}

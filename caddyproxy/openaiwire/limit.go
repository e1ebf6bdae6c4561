package openaiwire

import (
	"fmt"
	"strconv"
	"strings"
)

// The output limit members of the OpenAI APIs, as SetOutputLimit writes
// them: chat completions take max_completion_tokens (max_tokens is
// deprecated there, and OpenAI's reasoning models refuse it), legacy
// completions take max_tokens, the Responses API takes max_output_tokens
// (at least 16 at OpenAI). Embeddings have no output.
const (
	MemberMaxCompletionTokens = "max_completion_tokens"
	MemberMaxTokens           = "max_tokens"
	MemberMaxOutputTokens     = "max_output_tokens"
)

// SetOutputLimit returns body with its member called member (one of the
// Member* constants) set to limit, a positive integer, editing the raw
// bytes in place like InjectIncludeUsage: the member is added after the last
// one when missing (or replaced when null), everything else is kept
// byte-for-byte, and repeated copies of it are collapsed into one. The
// other two output limit members are left as they are. The error wraps
// ErrInvalidJSON when body is not one JSON object.
func SetOutputLimit(body []byte, member string, limit int64) ([]byte, error) {
	switch member {
	case MemberMaxCompletionTokens, MemberMaxTokens, MemberMaxOutputTokens:
	default:
		return nil, fmt.Errorf("set output limit: %q is not an output limit member", member)
	}
	if limit < 1 {
		return nil, fmt.Errorf("set output limit: %s %d is not positive", member, limit)
	}
	if err := validObject(body, "request body"); err != nil {
		return nil, err
	}
	val := strconv.AppendInt(nil, limit, 10)
	return setMember(body, member, func([]byte) ([]byte, error) { return val, nil })
}

// DescribeOutput says how a request's worst-case output is made up, for
// messages: the factors that multiply its output limit (prompts of a
// /v1/completions batch, n or best_of) and the limit itself, each with the
// member it came from, e.g. "n=128 × max_tokens=16384" or
// "3 prompts × best_of=4 × max_tokens=100". When the request sets no output
// limit, fallback names the one that applies (e.g. "default_max_tokens=4096").
// It reads the body as ParseRequest does and describes what it can of a
// body ParseRequest would refuse.
func DescribeOutput(body []byte, fallback string) string {
	var f requestFields
	if it, ok := newObjectIter(body); ok {
		for {
			m, more := it.next()
			if !more {
				break
			}
			f.take(m)
		}
	}
	var parts []string
	if p := promptCount(f[mPrompt]); p > 1 {
		parts = append(parts, strconv.Itoa(p)+" prompts")
	}
	if name, n := f.largestNamed(mN, mBestOf); n > 1 {
		parts = append(parts, name+"="+strconv.FormatInt(n, 10))
	}
	if name, n := f.largestNamed(mMaxTokens, mMaxCompletionTokens, mMaxOutputTokens); n > 0 {
		parts = append(parts, name+"="+strconv.FormatInt(n, 10))
	} else if fallback != "" {
		parts = append(parts, fallback)
	}
	return strings.Join(parts, " × ")
}

// largestNamed returns the largest valid count among the members at the
// indexes given, and its name; 0 when none is set.
func (f *requestFields) largestNamed(members ...int) (string, int64) {
	name, best := "", int64(0)
	for _, i := range members {
		if isNull(f[i]) {
			continue
		}
		if k, problem := parseCount(f[i]); problem == "" && k > best {
			name, best = requestMembers()[i], k
		}
	}
	return name, best
}

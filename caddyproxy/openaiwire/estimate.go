package openaiwire

// MessageOverheadTokens is the number of tokens [ParseRequest] adds per
// message (or Responses API input item) for the role and framing tokens a
// chat template wraps around every message.
const MessageOverheadTokens = 4

// EstimateTokens is the gateway's documented estimate of how many tokens a
// text of chars Unicode characters costs: ceil(chars / 4), i.e. four
// characters per token, rounded up. It is used wherever the real count is
// not known yet (prompt size before a request is sent, output of a stream
// that was cut before its usage arrived). Zero or negative input gives 0.
func EstimateTokens(chars int64) int64 {
	if chars <= 0 {
		return 0
	}
	n := chars / 4
	if chars%4 != 0 {
		n++
	}
	return n
}

package gwtest

import (
	"fmt"
	"net/http"
	"strings"
)

// StoredResponse is a response the mock keeps, as a provider stores a
// Responses API response: it answers GET /v1/responses/{id},
// GET /v1/responses/{id}/input_items and DELETE /v1/responses/{id} for it,
// and accepts its id as previous_response_id.
type StoredResponse struct {
	ID      string
	Model   string
	Input   []byte // the body of the request that created it
	Text    string
	Usage   *Usage
	Deleted bool
}

// newResponseID returns a new response id: resp_mock_1, resp_mock_2, …
func (m *MockProvider) newResponseID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextRsp++
	return fmt.Sprintf("resp_mock_%d", m.nextRsp)
}

// keepResponse stores the response id once its answer a is complete.
func (m *MockProvider) keepResponse(id, model string, input []byte, a *Answer) {
	if a.Status != http.StatusOK || a.Aborted {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stored == nil {
		m.stored = make(map[string]*StoredResponse)
	}
	m.stored[id] = &StoredResponse{ID: id, Model: model, Input: input, Text: a.Text, Usage: a.Usage}
}

// hasStored reports whether the mock keeps the response id (not deleted).
func (m *MockProvider) hasStored(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.stored[id]
	return ok && !s.Deleted
}

// Stored returns a copy of the stored response id.
func (m *MockProvider) Stored(id string) (StoredResponse, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.stored[id]
	if !ok {
		return StoredResponse{}, false
	}
	return *s, true
}

// storedRoute answers the stored-response endpoints; false for any other
// request.
func (m *MockProvider) storedRoute(aw *answerWriter, r *http.Request, p string) bool {
	i := strings.Index(p, "/responses/")
	if i < 0 {
		return false
	}
	id, sub, hasSub := strings.Cut(p[i+len("/responses/"):], "/")
	switch {
	case r.Method == http.MethodGet && !hasSub, r.Method == http.MethodDelete && !hasSub,
		r.Method == http.MethodGet && sub == "input_items":
	default:
		return false
	}
	m.mu.Lock()
	s, ok := m.stored[id]
	if ok && !s.Deleted && r.Method == http.MethodDelete {
		s.Deleted = true
	}
	var cp StoredResponse
	if ok {
		cp = *s
	}
	m.mu.Unlock()
	if !ok || (cp.Deleted && r.Method != http.MethodDelete) {
		aw.json(http.StatusNotFound, errBody("Response with id '"+id+"' not found.", "not_found"))
		return true
	}
	switch {
	case r.Method == http.MethodDelete:
		aw.json(http.StatusOK, map[string]any{"id": id, "object": "response", "deleted": true})
	case hasSub:
		aw.json(http.StatusOK, map[string]any{"object": "list", "has_more": false, "first_id": "msg_in", "last_id": "msg_in",
			"data": []any{map[string]any{"id": "msg_in", "type": "message", "role": "user", "status": "completed",
				"content": []any{map[string]any{"type": "input_text", "text": string(cp.Input)}}}}})
	default:
		out := map[string]any{"id": id, "object": "response", "created_at": 1700000000, "status": "completed", "model": cp.Model,
			"output": []any{map[string]any{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
				"content": []any{map[string]any{"type": "output_text", "text": cp.Text, "annotations": []any{}}}}}}
		if u := cp.Usage; u != nil {
			out["usage"] = map[string]any{"input_tokens": u.Prompt, "output_tokens": u.Completion, "total_tokens": u.Prompt + u.Completion}
		}
		aw.json(http.StatusOK, out)
	}
	return true
}

package openaiwire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Provider-side objects of the Responses API: the members of a request that
// refer to objects the provider stores, and the id of the response object a
// provider answers with.

// Error codes of requests about provider objects.
const (
	// CodeObjectNotFound: the object named (previous_response_id, a path
	// id, a conversation) does not exist for the caller's account.
	CodeObjectNotFound = "object_not_found"
	// CodeBackgroundNotSupported: "background": true was asked for.
	CodeBackgroundNotSupported = "background_not_supported"
)

// ResponseRefs are the members of a Responses API request that refer to
// objects the provider keeps.
type ResponseRefs struct {
	// PreviousResponseID is "previous_response_id", "" when absent or null.
	PreviousResponseID string
	// Conversation reports a "conversation" member that is not null (an id
	// or an object naming one).
	Conversation bool
	// Background is "background" (false when absent or null).
	Background bool
	// NotStored reports "store": false: the provider keeps no response.
	NotStored bool
	// ItemReference reports an "input" item of type item_reference: an
	// item the provider stored with some earlier response, by id.
	ItemReference bool
}

// ParseResponseRefs reads the object references of a Responses API request
// body, which must be one JSON object. previous_response_id must be a
// string, background and store booleans (each may be null), and none of
// them, nor conversation, may appear twice. Errors wrap ErrInvalidJSON.
func ParseResponseRefs(body []byte) (ResponseRefs, error) {
	var refs ResponseRefs
	if err := validObject(body, "request body"); err != nil {
		return refs, err
	}
	names := [...]string{"previous_response_id", "conversation", "background", "store", "input"}
	var vals [len(names)][]byte
	it, _ := newObjectIter(body)
	for {
		m, more := it.next()
		if !more {
			break
		}
		for i, name := range names {
			if keyIs(m.key, name) {
				if vals[i] != nil {
					return refs, fmt.Errorf("%w: member %q appears more than once", ErrInvalidJSON, name)
				}
				vals[i] = m.val
			}
		}
	}
	if !it.ok {
		return refs, fmt.Errorf("%w: request body is not a JSON object", ErrInvalidJSON)
	}
	if v := vals[0]; !isNull(v) {
		s, ok := stringValue(v)
		if !ok {
			return refs, fmt.Errorf("%w: previous_response_id must be a string", ErrInvalidJSON)
		}
		refs.PreviousResponseID = s
	}
	refs.Conversation = !isNull(vals[1])
	var err error
	if refs.Background, err = boolField(vals[2], "background"); err != nil {
		return refs, err
	}
	if string(trimSpace(vals[3])) == "false" {
		refs.NotStored = true
	} else if _, err := boolField(vals[3], "store"); err != nil {
		return refs, err
	}
	refs.ItemReference = hasItemReference(vals[4])
	return refs, nil
}

// hasItemReference reports whether an "input" array holds an item of type
// item_reference. Most inputs never mention one, so they are not decoded.
func hasItemReference(input []byte) bool {
	if kind(input) != '[' || !bytes.Contains(input, []byte("item_reference")) {
		return false
	}
	var items []map[string]json.RawMessage
	if json.Unmarshal(input, &items) != nil {
		return true // an array that mentions one but is not plain objects: assume it does
	}
	for _, it := range items {
		for k, v := range it {
			if strings.EqualFold(k, "type") {
				if t, ok := stringValue(v); ok && t == "item_reference" {
					return true
				}
			}
		}
	}
	return false
}

// ResponseID returns the top-level "id" of a Responses API response body
// (a JSON object whose "object", if present, is "response"), or "" when the
// body is not such an object or has no string id.
func ResponseID(body []byte) string {
	if validObject(body, "response body") != nil {
		return ""
	}
	return responseObjectID(body)
}

// responseObjectID is ResponseID of a raw object already known to be valid
// JSON.
func responseObjectID(obj []byte) string {
	if kind(obj) != '{' {
		return ""
	}
	if o := lookup(obj, "object"); o != nil {
		if s, ok := stringValue(o); !ok || s != "response" {
			return ""
		}
	}
	id, ok := stringValue(lookup(obj, "id"))
	if !ok {
		return ""
	}
	return id
}

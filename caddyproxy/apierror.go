package caddyproxy

import "encoding/json"

// ErrorBody is an error in the OpenAI API's shape,
//
//	{"error":{"message":"…","type":"…","param":null,"code":"…"}}
//
// which the OpenAI SDKs turn into their usual exceptions. Every error the
// gateway answers itself is written in it.
type ErrorBody struct {
	Error ErrorFields `json:"error"`
}

// ErrorFields are the members of ErrorBody's "error" object.
type ErrorFields struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// ErrorJSON renders an error in the OpenAI shape, with a null param.
func ErrorJSON(message, typ, code string) []byte {
	b, err := json.Marshal(ErrorBody{Error: ErrorFields{Message: message, Type: typ, Code: code}})
	if err != nil { // strings always marshal; keep the shape regardless
		return []byte(`{"error":{"message":"internal error","type":"server_error","param":null,"code":"internal_error"}}`)
	}
	return b
}

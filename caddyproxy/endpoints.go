package caddyproxy

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
)

// The endpoint policy of balance_guard: it fails closed. A request goes on
// only if its method and path are an endpoint the guard meters, one that is
// free by nature, or one the operator listed with an `endpoint` line; every
// other request, and every spelling of a path other than the canonical one,
// is refused with 403 endpoint_not_allowed and never reaches a provider.

// Endpoint is a path the operator lets through balance_guard on top of the
// endpoints it knows, at a price per request or free.
type Endpoint struct {
	// Method is the request method, in upper case: "POST".
	Method string `json:"method"`
	// Path is the whole request path as balance_guard sees it, prefix
	// included ("/v1/images/generations"), in canonical form: it starts
	// with a slash and has no empty, "." or ".." segment, no trailing
	// slash, and only the characters A-Z a-z 0-9 - _ . ~ : @ besides the
	// slashes. Requests match it exactly: same method, same path, nothing
	// percent-encoded.
	Path string `json:"path"`
	// Price is what one request costs, in currency units ("0.04", exact to
	// the nano-unit): it is held when the request is admitted (the balance
	// must cover it) and charged, in one ledger row, when the provider
	// answers with a 2xx status; an error status or no answer costs
	// nothing. Set either Price or Free.
	Price string `json:"price,omitempty"`
	// Free lets the requests through without a hold or a charge, like
	// POST /v1/moderations.
	Free bool `json:"free,omitempty"`

	price   int64
	metrics *labelMetrics
}

// routeKind is what the guard does with a request.
type routeKind uint8

const (
	routeRefused routeKind = iota // answered 403, never forwarded
	routeMetered                  // metered by its usage (ep says which API)
	routeCatalog                  // GET /v1/models[/{id}] answered by the guard
	routeFree                     // forwarded without a charge
	routePriced                   // forwarded at the price of an Endpoint
	routeMedia                    // an image or audio endpoint, metered by media.go (ep says which)
	routeObject                   // a stored response, forwarded free to its owner only (objects.go)
)

// route is the guard's decision about one request.
type route struct {
	kind     routeKind
	ep       endpoint  // routeMetered
	rule     *Endpoint // routePriced, or routeFree by an endpoint line
	isList   bool      // routeCatalog: the list, not one model
	modelID  string    // routeCatalog: the model asked for
	objectID string    // routeObject: the response id of the path
	objectOp objectOp  // routeObject: what is done with it
	refusal  *openaiwire.APIError
}

// builtinEndpoints are the endpoints the guard knows, by method and path
// after the API root (the first /v1 segment of the path).
var builtinEndpoints = map[string]route{
	"POST /chat/completions": {kind: routeMetered, ep: epChat},
	"POST /completions":      {kind: routeMetered, ep: epCompletions},
	"POST /embeddings":       {kind: routeMetered, ep: epEmbeddings},
	"POST /responses":        {kind: routeMetered, ep: epResponses},
	"POST /moderations":      {kind: routeFree},

	// images and audio: media.go
	"POST /images/generations":   {kind: routeMedia, ep: epImageGenerations},
	"POST /images/edits":         {kind: routeMedia, ep: epImageEdits},
	"POST /images/variations":    {kind: routeMedia, ep: epImageVariations},
	"POST /audio/speech":         {kind: routeMedia, ep: epSpeech},
	"POST /audio/transcriptions": {kind: routeMedia, ep: epTranscriptions},
	"POST /audio/translations":   {kind: routeMedia, ep: epTranslations},
}

// overridesMedia reports whether an endpoint line names an image or audio
// endpoint exactly (POST, canonical case): such a line replaces the
// metering of media.go with its own price per request (or makes it free),
// as it did before the gateway metered them.
func overridesMedia(e *Endpoint) bool {
	rest, ok := underRoot(e.Path)
	rt, known := builtinEndpoints[e.Method+" "+rest]
	return ok && known && rt.kind == routeMedia
}

// apiRoot is the path segment the built-in endpoints follow.
const apiRoot = "/v1"

// routeOf decides what happens to a request. The path is compared as it
// came: a request whose path is percent-encoded anywhere (r.URL.RawPath
// set), or is not canonical, is refused rather than normalised, since the
// provider behind the gateway may read such a spelling as another
// endpoint than the guard would.
func (g *BalanceGuard) routeOf(r *http.Request) route {
	if isUpgrade(r) {
		return route{refusal: upgradeRefused(r)}
	}
	p := r.URL.Path
	if (r.URL.RawPath != "" && r.URL.RawPath != p) || r.URL.EscapedPath() != p || !canonicalPath(p) {
		return route{refusal: endpointNotAllowed(r, notCanonical)}
	}
	for i := range g.Endpoints {
		if e := &g.Endpoints[i]; e.Method == r.Method && e.Path == p {
			if e.Free {
				return route{kind: routeFree, rule: e}
			}
			return route{kind: routePriced, rule: e}
		}
	}
	if rest, ok := underRoot(p); ok {
		if rt, ok := builtinEndpoints[r.Method+" "+rest]; ok {
			return rt
		}
		if rt, ok := objectRoute(r.Method, rest); ok {
			return rt
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			if isList, id, ok := modelsRoute(rest); ok {
				if g.ModelsEndpoint == modelsFromGateway {
					return route{kind: routeCatalog, isList: isList, modelID: id}
				}
				return route{kind: routeFree}
			}
		}
	}
	why := notListed
	if knownInAnotherCase(p) {
		why = notAsKnown
	}
	return route{refusal: endpointNotAllowed(r, why)}
}

// knownInAnotherCase reports whether a path is, in another case, one the
// guard handles itself (/v1/Chat/Completions): a provider that routes
// paths in any case would serve it as that endpoint, so an endpoint line
// must not allow it at another price.
func knownInAnotherCase(p string) bool {
	rest, ok := underRoot(strings.ToLower(p))
	if !ok {
		return false
	}
	if _, _, models := modelsRoute(rest); models {
		return true
	}
	for k := range builtinEndpoints {
		if _, path, _ := strings.Cut(k, " "); path == rest {
			return true
		}
	}
	return false
}

// underRoot returns the part of a canonical path after its first /v1
// segment: "/chat/completions" for /v1/chat/completions and for
// /team-a/v1/chat/completions.
func underRoot(p string) (string, bool) {
	i := strings.Index(p+"/", apiRoot+"/")
	if i < 0 {
		return "", false
	}
	return p[i+len(apiRoot):], true
}

// modelsRoute tells whether the path after the API root is the model list
// or one model; model ids may contain slashes (org/model).
func modelsRoute(rest string) (isList bool, id string, ok bool) {
	if rest == "/models" {
		return true, "", true
	}
	if id, ok := strings.CutPrefix(rest, "/models/"); ok && id != "" {
		return false, id, true
	}
	return false, "", false
}

// canonicalPath reports whether p is a path as the OpenAI API spells its
// endpoints: a slash, then segments of A-Z a-z 0-9 - _ . ~ : @ separated by
// single slashes, none of them "." or "..", and no trailing slash.
func canonicalPath(p string) bool {
	if len(p) < 2 || p[0] != '/' {
		return false
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := 0; i < len(seg); i++ {
			if !pathByte(seg[i]) {
				return false
			}
		}
	}
	return true
}

func pathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.~:@", c) >= 0
}

// isUpgrade reports whether r asks to switch protocols (a WebSocket, as the
// Realtime API uses, or h2c).
func isUpgrade(r *http.Request) bool {
	if r.Header.Get("Upgrade") != "" {
		return true
	}
	for _, v := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// maxPathInMessage bounds how much of a refused path an error message
// repeats.
const maxPathInMessage = 200

// quotedPath is the path as the client sent it, quoted, so that encoded,
// invisible and control characters show.
func quotedPath(r *http.Request) string {
	p := r.URL.EscapedPath()
	if r.URL.RawPath != "" {
		p = r.URL.RawPath
	}
	if len(p) > maxPathInMessage {
		p = p[:maxPathInMessage] + "…"
	}
	return strconv.QuoteToASCII(p)
}

// Why a request is outside the policy, for the message.
const (
	notListed    = iota // an endpoint line could allow it
	notCanonical        // the path is not spelled canonically
	notAsKnown          // a path the guard handles, in another case or method
)

// endpointNotAllowed is the 403 of a request outside the policy.
func endpointNotAllowed(r *http.Request, why int) *openaiwire.APIError {
	method := r.Method // a token: net/http refuses any other
	msg := fmt.Sprintf("%s %s is not allowed on this gateway, so the request was not sent.", method, quotedPath(r))
	switch why {
	case notListed:
		msg += fmt.Sprintf(" The operator of the gateway can allow it with a line \"endpoint %s %s price <amount>\" or \"endpoint %s %s free\" in balance_guard.",
			method, r.URL.Path, method, r.URL.Path)
	case notCanonical:
		msg += " Paths must be written exactly as the API defines them: no percent-encoded characters, backslashes, dot or empty segments, trailing slashes, \";\" parameters or characters outside A-Z a-z 0-9 - _ . ~ : @."
	case notAsKnown:
		msg += " The gateway serves this path only with the method and in the spelling of its own endpoints (POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, /v1/moderations, /v1/images/generations, /v1/images/edits, /v1/images/variations, /v1/audio/speech, /v1/audio/transcriptions and /v1/audio/translations; GET /v1/models)."
	}
	return &openaiwire.APIError{
		Status: http.StatusForbidden, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeEndpointNotAllowed, Reason: openaiwire.CodeEndpointNotAllowed,
		Message: msg,
	}
}

// upgradeRefused is the 403 of a request for a WebSocket (or any other
// protocol upgrade).
func upgradeRefused(r *http.Request) *openaiwire.APIError {
	e := endpointNotAllowed(r, notCanonical)
	e.Message = fmt.Sprintf("%s %s asks for a protocol upgrade (WebSocket), which this gateway does not allow: the Realtime API and other WebSocket connections are not supported, so the request was not sent.",
		r.Method, quotedPath(r))
	return e
}

// endpointMethods are the methods an endpoint line may name.
var endpointMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true,
	http.MethodPut: true, http.MethodPatch: true, http.MethodDelete: true,
}

// provision validates an endpoint line and converts its price.
func (e *Endpoint) provision() error {
	if !endpointMethods[e.Method] {
		return fmt.Errorf("endpoint %s %s: method must be one of GET, HEAD, POST, PUT, PATCH or DELETE", e.Method, e.Path)
	}
	if !canonicalPath(e.Path) {
		return fmt.Errorf("endpoint %s %q: the path must be canonical: a slash, then segments of A-Z a-z 0-9 - _ . ~ : @ separated by single slashes, none of them . or .., no trailing slash", e.Method, e.Path)
	}
	switch {
	case e.Free && e.Price != "":
		return fmt.Errorf("endpoint %s %s: either a price or free, not both", e.Method, e.Path)
	case e.Free:
		return nil
	case e.Price == "":
		return fmt.Errorf("endpoint %s %s: needs a price or free", e.Method, e.Path)
	}
	// ParseAmount caps amounts at keystore.MaxAmount, the largest hold.
	n, err := parsePrice(e.Price)
	if err != nil {
		return fmt.Errorf("endpoint %s %s: %w", e.Method, e.Path, err)
	}
	e.price = n
	return nil
}

// provisionEndpoints validates the endpoint lines: each is canonical, none
// is listed twice, and none is an endpoint the guard already meters or
// answers (that would make a metered API a flat-priced one).
func (g *BalanceGuard) provisionEndpoints() error {
	seen := map[string]bool{}
	for i := range g.Endpoints {
		e := &g.Endpoints[i]
		if err := e.provision(); err != nil {
			return err
		}
		k := e.Method + " " + e.Path
		if seen[k] {
			return fmt.Errorf("endpoint %s is listed twice", k)
		}
		seen[k] = true
		if (knownInAnotherCase(e.Path) && !overridesMedia(e)) || isObjectEndpoint(e.Method, e.Path) {
			return fmt.Errorf("endpoint %s: balance_guard already handles this path (in some case and method): it meters or answers it itself", k)
		}
	}
	return nil
}

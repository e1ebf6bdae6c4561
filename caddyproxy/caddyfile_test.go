package caddyproxy

// Every way to get balance_guard and ai_model wrong: each error branch of
// their UnmarshalCaddyfile (the message and the line Caddy reports), then
// the JSON configs that parse but that Provision must refuse. What a correct
// Caddyfile adapts to is in e2e/testdata/caddyfile_adapt.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// argErr is the start of Caddy's message for a missing or extra argument;
// the token it names follows in quotes.
const argErr = "wrong argument count or unexpected line ending after "

// parseErrorCase is one wrong Caddyfile: the tokens of the directive, a
// part of the error message, and the line of Testfile it must name.
type parseErrorCase struct {
	name  string
	input string
	want  string
	line  int
}

// checkParseError fails the test unless err contains c.want and ends with
// the position Caddy adds to parse errors.
func checkParseError(t *testing.T, c parseErrorCase, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("parsed without error:\n%s\nwant an error containing %q", c.input, c.want)
	}
	msg := err.Error()
	if !strings.Contains(msg, c.want) {
		t.Errorf("error %q\ndoes not contain %q", msg, c.want)
	}
	if at := fmt.Sprintf(", at Testfile:%d", c.line); !strings.HasSuffix(msg, at) {
		t.Errorf("error %q\ndoes not end with %q", msg, at)
	}
}

// guardBlock is a balance_guard block holding lines; lines[i] is on line
// i+2 of the Testfile.
func guardBlock(lines ...string) string {
	return "balance_guard {\n\t" + strings.Join(lines, "\n\t") + "\n}"
}

func TestBalanceGuardCaddyfileErrors(t *testing.T) {
	for _, c := range []parseErrorCase{
		{"argument after the directive", "balance_guard extra", argErr + "'extra'", 1},
		{"argument before the block", "balance_guard extra {\n\tdefault_max_tokens 1\n}", argErr + "'extra'", 1},
		{"unknown option", guardBlock("frobnicate 1"), `unrecognized balance_guard option "frobnicate"`, 2},

		{"price without a model", guardBlock("price"), argErr + "'price'", 2},
		{"price field without an amount", guardBlock("price gpt-4o input"), "price gpt-4o: input needs an amount", 2},
		{"price last field without an amount", guardBlock("price gpt-4o input 1 output"), "price gpt-4o: output needs an amount", 2},
		{"price unknown field", guardBlock("price gpt-4o speed 1"), `price gpt-4o: unknown field "speed" (want input, output, cached, image, characters or request)`, 2},
		{"price without output", guardBlock("price gpt-4o input 2.50"), "price gpt-4o: both input and output prices are required", 2},
		{"price without input", guardBlock("price gpt-4o output 10 cached 1"), "price gpt-4o: both input and output prices are required", 2},
		{"price with only a model", guardBlock("price gpt-4o"), "price gpt-4o: both input and output prices are required", 2},
		{"price bad input amount", guardBlock("price gpt-4o input abc output 1"), `price for "gpt-4o": input: invalid argument: amount "abc" is not a decimal number`, 2},
		{"price negative output", guardBlock("price gpt-4o input 1 output -1"), `price for "gpt-4o": output: price "-1" is negative`, 2},
		{"price bad cached amount", guardBlock("price gpt-4o input 1 output 2 cached 0.0000000001"), `price for "gpt-4o": cached: invalid argument: amount "0.0000000001" has more than 9 decimal places`, 2},
		{"price bad pattern", guardBlock("price gpt-[4o input 1 output 2"), `price for "gpt-[4o": bad pattern: syntax error in pattern`, 2},
		{"price error names its line", guardBlock("price a input 1 output 2", "price b input 1"), "price b: both input and output prices are required", 3},
		// media prices (media.go)
		{"image without a size", guardBlock("price dall-e-3 image"), "price dall-e-3: image needs an amount", 2},
		{"image without an amount", guardBlock("price dall-e-3 image 1024x1024"), "price dall-e-3: image 1024x1024 needs an amount", 2},
		{"image with a quality but no amount", guardBlock("price dall-e-3 image 1024x1024 hd"), "price dall-e-3: image 1024x1024 hd needs an amount", 2},
		{"image bad amount", guardBlock("price dall-e-3 image 1024x1024 hd x"), `price for "dall-e-3": image 1024x1024 hd: invalid argument: amount "x" is not a decimal number`, 2},
		{"image negative amount", guardBlock("price dall-e-3 image 1024x1024 -1"), `price for "dall-e-3": image 1024x1024 *: price "-1" is negative`, 2},
		{"image priced twice", guardBlock("price dall-e-3 image 1024x1024 hd 1", "price dall-e-3 image 1024x1024 hd 2"), `price for "dall-e-3": image 1024x1024 hd is priced twice`, 3},
		{"image any quality twice", guardBlock("price dall-e-2 image 512x512 1 image 512x512 * 2"), `price for "dall-e-2": image 512x512 * is priced twice`, 2},
		{"characters without an amount", guardBlock("price tts-1 characters"), "price tts-1: characters needs an amount", 2},
		{"characters bad amount", guardBlock("price tts-1 characters 1e3"), `price for "tts-1": characters: invalid argument`, 2},
		{"request negative", guardBlock("price whisper-1 request -0.006"), `price for "whisper-1": request: price "-0.006" is negative`, 2},
		{"media with half a token price", guardBlock("price gpt-image-1 input 5 image 1024x1024 0.1"), "price gpt-image-1: both input and output prices are required", 2},
		{"media with only cached", guardBlock("price tts-1 cached 1 characters 15"), "price tts-1: both input and output prices are required", 2},
		{"token prices twice for a model", guardBlock("price gpt-image-1 input 5 output 40", "price gpt-image-1 input 6 output 40"), "price gpt-image-1: input is priced twice", 3},
		{"characters twice for a model", guardBlock("price tts-1 characters 15", "price tts-1 characters 16"), "price tts-1: characters is priced twice", 3},
		{"request twice for a model", guardBlock("price whisper-1 request 1", "price whisper-1 request 2"), "price whisper-1: request is priced twice", 3},

		{"unknown_model without an action", guardBlock("unknown_model"), argErr + "'unknown_model'", 2},
		{"unknown_model price without amounts", guardBlock("unknown_model price"), argErr + "'price'", 2},
		{"unknown_model price without output", guardBlock("unknown_model price 1"), argErr + "'1'", 2},
		{"unknown_model price extra argument", guardBlock("unknown_model price 1 2 3"), argErr + "'3'", 2},
		{"unknown_model reject with prices", guardBlock("unknown_model reject 1 2"), argErr + "'1'", 2},
		{"unknown_model unknown action", guardBlock("unknown_model allow"), `unknown_model must be 'reject' or 'price <input> <output>', got "allow"`, 2},
		{"unknown_model bad input", guardBlock("unknown_model price x 2"), `unknown_model price: input: invalid argument: amount "x" is not a decimal number`, 2},
		{"unknown_model negative output", guardBlock("unknown_model price 1 -2"), `unknown_model price: output: price "-2" is negative`, 2},

		{"default_max_tokens without a number", guardBlock("default_max_tokens"), argErr + "'default_max_tokens'", 2},
		{"default_max_tokens not a number", guardBlock("default_max_tokens lots"), `default_max_tokens must be a non-negative integer, got "lots"`, 2},
		{"default_max_tokens negative", guardBlock("default_max_tokens -1"), `default_max_tokens must be a non-negative integer, got "-1"`, 2},
		{"default_max_tokens extra argument", guardBlock("default_max_tokens 1 2"), argErr + "'2'", 2},

		{"max_request_body without a size", guardBlock("max_request_body"), argErr + "'max_request_body'", 2},
		{"max_request_body not a size", guardBlock("max_request_body lots"), `max_request_body must be a size such as 10MB, got "lots"`, 2},
		{"max_request_body zero", guardBlock("max_request_body 0"), `max_request_body must be a size such as 10MB, got "0"`, 2},
		{"max_request_body over 1TiB", guardBlock("max_request_body 2TiB"), `max_request_body must be a size such as 10MB, got "2TiB"`, 2},
		{"max_request_body extra argument", guardBlock("max_request_body 10MB 20MB"), argErr + "'20MB'", 2},

		{"alias without names", guardBlock("alias"), "alias takes a public model name and the provider's model name, got 0 arguments", 2},
		{"alias with one name", guardBlock("alias fast"), "got 1 arguments", 2},
		{"alias with three names", guardBlock("alias fast gpt-4o-mini gpt-4o"), "got 3 arguments", 2},
		{"alias empty public name", guardBlock(`alias "" gpt-4o-mini`), `alias needs a public name and a provider model, got "" -> "gpt-4o-mini"`, 2},
		{"alias public name is a pattern", guardBlock("alias fast* gpt-4o-mini"), `alias "fast*": a public model name cannot be a pattern`, 2},
		{"alias to itself", guardBlock("alias fast fast"), `alias "fast" maps to itself`, 2},
		{"alias defined twice", guardBlock("alias fast gpt-4o-mini", "alias fast gpt-4o"), "alias fast is defined twice", 3},

		{"models_endpoint without a value", guardBlock("models_endpoint"), argErr + "'models_endpoint'", 2},
		{"models_endpoint unknown value", guardBlock("models_endpoint both"), `models_endpoint must be gateway or upstream, got "both"`, 2},
		{"models_endpoint extra argument", guardBlock("models_endpoint gateway upstream"), argErr + "'upstream'", 2},

		{"endpoint without arguments", guardBlock("endpoint"), `endpoint takes a method, a path, then price <amount> or free, got ""`, 2},
		{"endpoint without a price or free", guardBlock("endpoint POST /v1/images/generations"), `got "POST /v1/images/generations"`, 2},
		{"endpoint price without an amount", guardBlock("endpoint POST /v1/images/generations price"), `got "POST /v1/images/generations price"`, 2},
		{"endpoint free with an amount", guardBlock("endpoint POST /v1/images/generations free 1"), `got "POST /v1/images/generations free 1"`, 2},
		{"endpoint unknown word", guardBlock("endpoint POST /v1/images/generations cost 1"), `got "POST /v1/images/generations cost 1"`, 2},
		{"endpoint lower-case method", guardBlock("endpoint post /v1/images/generations free"), "endpoint post /v1/images/generations: method must be one of GET, HEAD, POST, PUT, PATCH or DELETE", 2},
		{"endpoint unknown method", guardBlock("endpoint CONNECT /v1/realtime free"), "method must be one of", 2},
		{"endpoint relative path", guardBlock("endpoint POST v1/images free"), `endpoint POST "v1/images": the path must be canonical`, 2},
		{"endpoint trailing slash", guardBlock("endpoint POST /v1/images/ free"), `endpoint POST "/v1/images/": the path must be canonical`, 2},
		{"endpoint dot segment", guardBlock("endpoint POST /v1/./images free"), "the path must be canonical", 2},
		{"endpoint doubled slash", guardBlock("endpoint POST /v1//images free"), "the path must be canonical", 2},
		{"endpoint percent-encoded", guardBlock("endpoint POST /v1/images%2Fedits free"), "the path must be canonical", 2},
		{"endpoint parameters", guardBlock("endpoint POST /v1/images;x free"), "the path must be canonical", 2},
		{"endpoint pattern", guardBlock("endpoint GET /v1/files/* free"), "the path must be canonical", 2},
		{"endpoint bad price", guardBlock("endpoint POST /v1/images/generations price 1e3"), `endpoint POST /v1/images/generations: invalid argument: amount "1e3" is not a decimal number`, 2},
		{"endpoint negative price", guardBlock("endpoint POST /v1/images/generations price -1"), `endpoint POST /v1/images/generations: price "-1" is negative`, 2},
		{"endpoint price too precise", guardBlock("endpoint POST /v1/images/generations price 0.0000000001"), "more than 9 decimal places", 2},
		{"endpoint error names its line", guardBlock("endpoint POST /v1/a free", "endpoint POST /v1/b"), `got "POST /v1/b"`, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			var g BalanceGuard
			checkParseError(t, c, g.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input)))
		})
	}
}

// TestBalanceGuardCaddyfileRepeats: price and alias add up, the other
// options keep the last value, and an alias chain parses (Provision refuses
// it, below).
func TestBalanceGuardCaddyfileRepeats(t *testing.T) {
	var g BalanceGuard
	err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser(guardBlock(
		"price a input 1 output 2",
		"price b input 3 output 4",
		"default_max_tokens 10",
		"default_max_tokens 20",
		"alias x y",
		"alias y z",
		"unknown_model reject",
		"unknown_model price 1 2",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Prices) != 2 || g.Prices[0].Model != "a" || g.Prices[1].Model != "b" {
		t.Errorf("prices %+v, want a then b", g.Prices)
	}
	if g.DefaultMaxTokens != 20 {
		t.Errorf("default_max_tokens %d, want the last one, 20", g.DefaultMaxTokens)
	}
	if len(g.Aliases) != 2 {
		t.Errorf("aliases %v", g.Aliases)
	}
	if u := g.UnknownModel; u == nil || u.Action != "price" || u.Input != "1" || u.Output != "2" {
		t.Errorf("unknown_model %+v, want the last one, price 1 2", u)
	}
}

// provisionErrorCase is a JSON config of a module that unmarshals but must
// be refused by Provision.
type provisionErrorCase struct {
	name string
	json string
	want string
}

// TestBalanceGuardProvisionErrors: JSON (written by hand or by the admin
// API) skips the Caddyfile's checks; Provision makes the same ones, and the
// ones the Caddyfile cannot make. All of them come before the store is
// looked up, so an empty caddy.Context is enough.
func TestBalanceGuardProvisionErrors(t *testing.T) {
	for _, c := range []provisionErrorCase{
		{"price without a model", `{"prices":[{"input":"1","output":"2"}]}`, "price without a model"},
		{"price bad pattern", `{"prices":[{"model":"[x","input":"1","output":"2"}]}`, `price for "[x": bad pattern`},
		{"price without input", `{"prices":[{"model":"m","output":"2"}]}`, `price for "m": input: invalid argument: empty amount`},
		{"image price without a size", `{"prices":[{"model":"m","images":[{"price":"1"}]}]}`, `price for "m": image price without a size (use * for any)`},
		{"image price without a price", `{"prices":[{"model":"m","images":[{"size":"*"}]}]}`, `price for "m": image * *: invalid argument: empty amount`},
		{"media price with half a token price", `{"prices":[{"model":"m","output":"2","request":"1"}]}`, `price for "m": input: invalid argument: empty amount`},
		{"price without output", `{"prices":[{"model":"m","input":"1"}]}`, `price for "m": output: invalid argument: empty amount`},
		{"price negative input", `{"prices":[{"model":"m","input":"-0.1","output":"2"}]}`, `price "-0.1" is negative`},
		{"price bad cached", `{"prices":[{"model":"m","input":"1","output":"2","cached":"1e3"}]}`, `price for "m": cached: invalid argument: amount "1e3"`},
		{"second price is checked too", `{"prices":[{"model":"a","input":"1","output":"2"},{"model":"b","input":"x","output":"2"}]}`, `price for "b": input`},
		{"unknown_model without action", `{"unknown_model":{}}`, `unknown_model must be 'reject' or 'price <input> <output>', got ""`},
		{"unknown_model unknown action", `{"unknown_model":{"action":"allow"}}`, `got "allow"`},
		{"unknown_model reject with prices", `{"unknown_model":{"action":"reject","input":"1","output":"2"}}`, "unknown_model reject takes no prices"},
		{"unknown_model price without output", `{"unknown_model":{"action":"price","input":"1"}}`, "unknown_model price: output: invalid argument: empty amount"},
		{"unknown_model price bad input", `{"unknown_model":{"action":"price","input":"one","output":"2"}}`, "unknown_model price: input"},
		{"negative default_max_tokens", `{"default_max_tokens":-1}`, "default_max_tokens must not be negative"},
		{"negative max_request_body", `{"max_request_body":-1}`, "max_request_body must not be negative"},
		{"unknown models_endpoint", `{"models_endpoint":"both"}`, `models_endpoint must be gateway or upstream, got "both"`},
		{"alias chain", `{"aliases":{"fast":"quick","quick":"gpt-4o-mini"}}`, `alias fast: target "quick" is itself an alias; aliases do not chain`},
		{"alias to itself", `{"aliases":{"fast":"fast"}}`, `alias "fast" maps to itself`},
		{"alias pattern", `{"aliases":{"gpt-*":"gpt-4o"}}`, `alias "gpt-*": a public model name cannot be a pattern`},
		{"alias empty target", `{"aliases":{"fast":""}}`, `alias needs a public name and a provider model, got "fast" -> ""`},
		{"alias empty public name", `{"aliases":{"":"gpt-4o"}}`, `alias needs a public name`},
		{"endpoint without a method", `{"endpoints":[{"path":"/v1/images/generations","free":true}]}`, "method must be one of GET, HEAD, POST, PUT, PATCH or DELETE"},
		{"endpoint without a path", `{"endpoints":[{"method":"POST","free":true}]}`, `endpoint POST "": the path must be canonical`},
		{"endpoint not canonical", `{"endpoints":[{"method":"POST","path":"/v1/Images/generations/","free":true}]}`, "the path must be canonical"},
		{"endpoint non-ASCII", `{"endpoints":[{"method":"POST","path":"/v1/images/generations\u200b","free":true}]}`, "the path must be canonical"},
		{"endpoint with neither price nor free", `{"endpoints":[{"method":"POST","path":"/v1/images/generations"}]}`, "endpoint POST /v1/images/generations: needs a price or free"},
		{"endpoint with price and free", `{"endpoints":[{"method":"POST","path":"/v1/images/generations","price":"1","free":true}]}`, "either a price or free, not both"},
		{"endpoint bad price", `{"endpoints":[{"method":"POST","path":"/v1/x","price":"0,5"}]}`, `endpoint POST /v1/x: invalid argument`},
		{"endpoint price over the maximum", `{"endpoints":[{"method":"POST","path":"/v1/x","price":"1000000001"}]}`, `endpoint POST /v1/x: invalid argument: amount "1000000001" is too large`},
		{"endpoint listed twice", `{"endpoints":[{"method":"POST","path":"/v1/x","free":true},{"method":"POST","path":"/v1/x","price":"1"}]}`, "endpoint POST /v1/x is listed twice"},
		{"endpoint already metered", `{"endpoints":[{"method":"POST","path":"/v1/chat/completions","price":"0.01"}]}`, "endpoint POST /v1/chat/completions: balance_guard already handles this path"},
		{"endpoint already metered under a prefix", `{"endpoints":[{"method":"POST","path":"/team/v1/responses","free":true}]}`, "already handles this path"},
		{"endpoint models", `{"endpoints":[{"method":"GET","path":"/v1/models/gpt-4o","free":true}]}`, "already handles this path"},
		{"endpoint metered path in another case", `{"endpoints":[{"method":"POST","path":"/v1/Chat/Completions","price":"0.01"}]}`, "already handles this path"},
		{"endpoint metered path with another method", `{"endpoints":[{"method":"GET","path":"/v1/chat/completions","free":true}]}`, "already handles this path"},
		{"endpoint moderations", `{"endpoints":[{"method":"POST","path":"/v1/moderations","price":"0.01"}]}`, "already handles this path"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var g BalanceGuard
			if err := caddy.StrictUnmarshalJSON([]byte(c.json), &g); err != nil {
				t.Fatalf("%s does not unmarshal: %v", c.json, err)
			}
			err := g.Provision(caddy.Context{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s: Provision error %v, want one containing %q", c.json, err, c.want)
			}
		})
	}
}

func TestMatchModelCaddyfileErrors(t *testing.T) {
	for _, c := range []parseErrorCase{
		{"no pattern", "ai_model", argErr + "'ai_model'", 1},
		{"block", "ai_model gpt-* {\n\to3*\n}", "ai_model takes no block", 2},
		// a named matcher's second ai_model line is its own segment
		{"second line without a pattern", "ai_model gpt-*\nai_model", argErr + "'ai_model'", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			var m MatchModel
			checkParseError(t, c, m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input)))
		})
	}
}

// TestMatchModelProvisionErrors: the patterns a JSON config can hold that
// the Caddyfile would not produce, or that only path.Match rejects.
func TestMatchModelProvisionErrors(t *testing.T) {
	for _, c := range []provisionErrorCase{
		{"no pattern", `[]`, "at least one model pattern is required"},
		{"empty pattern", `["gpt-*",""]`, "empty model pattern"},
		{"bad pattern", `["gpt-[4o"]`, `pattern "gpt-[4o": syntax error in pattern`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var m MatchModel
			if err := caddy.StrictUnmarshalJSON([]byte(c.json), &m); err != nil {
				t.Fatal(err)
			}
			err := m.Provision(caddy.Context{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s: Provision error %v, want one containing %q", c.json, err, c.want)
			}
		})
	}
}

package caddyproxy

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/http"
	"net/http/httptrace"
	"path"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"
	"github.com/metask/caddy-ai-gateway/keystore"
)

// Metering of the image and audio endpoints: POST /v1/images/generations,
// /v1/images/edits, /v1/images/variations, /v1/audio/speech,
// /v1/audio/transcriptions and /v1/audio/translations. Their model is read
// from the body whatever its encoding (multipart.go), checked against the
// key's allowlist, and priced by the usage the provider reports (token
// prices) or by a media price: per image by size and quality, per 1M input
// characters, or per request. See docs/billing.md.

// The media endpoints, as values of endpoint (guard.go).
const (
	epImageGenerations endpoint = iota + 100
	epImageEdits
	epImageVariations
	epSpeech
	epTranscriptions
	epTranslations
)

// isImages reports whether ep makes images.
func isImages(ep endpoint) bool {
	return ep == epImageGenerations || ep == epImageEdits || ep == epImageVariations
}

// MediaPrices are the prices of a model on the image and audio endpoints
// that are not per token. Amounts are decimal strings of the currency.
type MediaPrices struct {
	// Images are prices per image, by size and quality, for the images
	// endpoints: a request for n images costs n times the price of its size
	// and quality.
	Images []ImagePrice `json:"images,omitempty"`
	// Characters is the price of 1M characters (Unicode code points) of
	// the "input" text of POST /v1/audio/speech.
	Characters string `json:"characters,omitempty"`
	// Request is a price per request, for any image or audio endpoint the
	// other prices of the model do not cover (transcriptions and
	// translations of models that report no token usage, such as
	// whisper-1).
	Request string `json:"request,omitempty"`

	charactersNano, requestNano int64
	hasCharacters, hasRequest   bool
}

// ImagePrice is the price of one image of a size and quality.
type ImagePrice struct {
	// Size is the "size" of the request ("1024x1024"), or "*" for any.
	Size string `json:"size"`
	// Quality is the "quality" of the request ("standard", "hd", "low",
	// …); "" or "*" for any.
	Quality string `json:"quality,omitempty"`
	// Price is what one image costs.
	Price string `json:"price"`

	priceNano int64
}

func (m *MediaPrices) hasMedia() bool {
	return len(m.Images) > 0 || m.Characters != "" || m.Request != ""
}

// provisionMedia validates the media prices of p and converts them.
func (p *Price) provisionMedia() error {
	m := &p.MediaPrices
	var err error
	if m.Characters != "" {
		if m.charactersNano, err = parsePrice(m.Characters); err != nil {
			return fmt.Errorf("price for %q: characters: %w", p.Model, err)
		}
		m.hasCharacters = true
	}
	if m.Request != "" {
		if m.requestNano, err = parsePrice(m.Request); err != nil {
			return fmt.Errorf("price for %q: request: %w", p.Model, err)
		}
		m.hasRequest = true
	}
	seen := map[[2]string]bool{}
	for i := range m.Images {
		ip := &m.Images[i]
		if ip.Quality == "" {
			ip.Quality = "*"
		}
		if ip.Size == "" {
			return fmt.Errorf("price for %q: image price without a size (use * for any)", p.Model)
		}
		k := [2]string{ip.Size, ip.Quality}
		if seen[k] {
			return fmt.Errorf("price for %q: image %s %s is priced twice", p.Model, ip.Size, ip.Quality)
		}
		seen[k] = true
		if ip.priceNano, err = parsePrice(ip.Price); err != nil {
			return fmt.Errorf("price for %q: image %s %s: %w", p.Model, ip.Size, ip.Quality, err)
		}
	}
	return nil
}

// mediaRate is the resolved price of a media request.
type mediaRate struct {
	tokens    rate  // valid when hasTokens
	hasTokens bool  // usage the provider reports is billed at tokens
	unit      int64 // the price of one unit when hasUnit
	hasUnit   bool
	units     int64  // how many units the request is (images; characters)
	perM      bool   // unit is per 1M units (characters), rounded up once
	what      string // the unit, for the ledger note: "image 1024x1024 hd", "characters", "request"
	label     string
	metrics   *labelMetrics
}

// unitCost is the cost of the request by its media price:
// units × unit, or ceil(units × unit / 1,000,000) for characters; exact,
// saturated at keystore.MaxAmount.
func (mr *mediaRate) unitCost() int64 {
	hi, lo := bits.Mul64(uint64(max(mr.units, 0)), uint64(max(mr.unit, 0)))
	if mr.perM {
		if hi >= tokensPerPriceUnit {
			return keystore.MaxAmount
		}
		q, rem := bits.Div64(hi, lo, tokensPerPriceUnit)
		if rem != 0 {
			q++
		}
		hi, lo = 0, q
	}
	if hi != 0 || lo > uint64(keystore.MaxAmount) {
		return keystore.MaxAmount
	}
	return int64(lo)
}

// matchQuality reports whether a priced size or quality covers what the
// request asked for; a request that names none (or "auto") is covered by
// every price, and charged the largest.
func matchField(priced, asked string) bool {
	return priced == "*" || asked == "" || asked == "auto" || priced == asked
}

// mediaPriceFor resolves the price of a media request: the first price
// whose pattern matches the model and that gives a media price the
// endpoint can use (for images, an image price of the request's size and
// quality; for speech, a characters price; for any, a request price), with
// that price's token prices if it has them; else the first matching price
// with token prices; else the unknown_model price (tokens). ok is false
// when nothing applies.
func (g *BalanceGuard) mediaPriceFor(model string, ep endpoint, req openaiwire.MediaRequest) (mediaRate, bool) {
	for i := range g.Prices {
		p := &g.Prices[i]
		if ok, _ := path.Match(p.Model, model); !ok {
			continue
		}
		mr := mediaRate{label: p.Model, metrics: p.metrics}
		if p.hasTokens {
			mr.hasTokens = true
			mr.tokens = rate{input: p.inputNano, output: p.outputNano, cached: p.cachedNano, label: p.Model, metrics: p.metrics}
		}
		switch {
		case isImages(ep) && len(p.Images) > 0:
			for _, ip := range p.Images {
				if matchField(ip.Size, req.Size) && matchField(ip.Quality, req.Quality) && (!mr.hasUnit || ip.priceNano > mr.unit) {
					mr.unit, mr.hasUnit, mr.what = ip.priceNano, true, "image "+ip.Size+" "+ip.Quality
				}
			}
			mr.units = req.Images
		case ep == epSpeech && p.hasCharacters:
			mr.unit, mr.hasUnit, mr.units, mr.perM, mr.what = p.charactersNano, true, req.InputChars, true, "characters"
		}
		if !mr.hasUnit && p.hasRequest {
			mr.unit, mr.hasUnit, mr.units, mr.what = p.requestNano, true, 1, "request"
		}
		if mr.hasUnit {
			return mr, true
		}
	}
	if t, ok := g.priceFor(model); ok {
		return mediaRate{tokens: t, hasTokens: true, label: t.label, metrics: t.metrics}, true
	}
	return mediaRate{}, false
}

// mediaHold is what a media request holds: the largest of its unit cost
// and, when its usage is billed at token prices, the token worst case:
// ceil(prompt characters / 4) input tokens plus default_max_tokens output
// tokens for every image (once for audio), at the token prices; at most
// keystore.MaxAmount.
func (g *BalanceGuard) mediaHold(mr *mediaRate, req openaiwire.MediaRequest, ep endpoint) int64 {
	var hold int64
	if mr.hasUnit {
		hold = mr.unitCost()
	}
	if mr.hasTokens {
		outputs := int64(1)
		if isImages(ep) {
			outputs = req.Images
		}
		out := int64(math.MaxInt64)
		if maxOut := int64(g.DefaultMaxTokens); outputs <= math.MaxInt64/maxOut {
			out = maxOut * outputs
		}
		prompt := openaiwire.EstimateTokens(req.PromptChars + req.InputChars)
		hold = max(hold, mr.tokens.cost(openaiwire.Usage{PromptTokens: prompt, CompletionTokens: out}))
	}
	return min(hold, keystore.MaxAmount)
}

// passMedia meters a request to an image or audio endpoint: it reads the
// model (400 when it cannot), checks the key's allowlist (403
// model_not_allowed) and the price (400 model_not_priced), holds the
// request's cost, forwards it through the meter and settles.
func (g *BalanceGuard) passMedia(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, id keystore.Identity, ep endpoint) (err error) {
	mb, refusal := g.readMedia(r)
	if refusal != nil {
		return g.refuse(w, refusal)
	}
	req := mb.req
	upstream := g.upstreamModel(req.Model)
	if !allowed(id, req.Model, upstream) {
		return g.refuse(w, modelNotAllowed(id, req.Model))
	}
	if upstream != req.Model {
		if refusal := mb.rewriteModel(r, upstream); refusal != nil {
			return g.refuse(w, refusal)
		}
	}
	mr, ok := g.mediaPriceFor(req.Model, ep, req)
	if !ok && upstream != req.Model {
		mr, ok = g.mediaPriceFor(upstream, ep, req)
	}
	if !ok {
		refusal := modelNotPriced(req.Model)
		if isImages(ep) && (req.Size != "" || req.Quality != "") {
			refusal.Message = fmt.Sprintf("The model %q has no price on this gateway for images of size %q and quality %q, so the request was not sent.", req.Model, req.Size, req.Quality)
		}
		return g.refuse(w, refusal)
	}
	holdAmount := g.mediaHold(&mr, req, ep)
	// Like every metered request, the balance must cover the worst case
	// (n images at the largest applicable price), checked under the lock.
	// Rate limits: requests and concurrency; images and audio are not
	// counted against token limits.
	hold, rerr := g.st().ReserveFor(id, holdAmount, keystore.RequireCovered, g.rateOption(upstream, 0))
	if rerr != nil {
		var be *keystore.BalanceError
		if !errors.As(rerr, &be) {
			return g.refuse(w, g.reserveError(id, rerr))
		}
		refusal := g.insufficient(id.AccountID, be.Balance, be.Held)
		refusal.Message = fmt.Sprintf("The request could cost up to %s %s (%s), more than the balance covers. ",
			keystore.FormatAmount(holdAmount), g.currency, describeMedia(req, ep)) + refusal.Message
		return g.refuse(w, refusal)
	}
	if sw, ok := w.(*scrubWriter); ok {
		sw.rate = hold.RateStatus()
	}
	r.Header.Set("Accept-Encoding", "identity")
	a := &admission{id: id, ep: ep, info: openaiwire.RequestInfo{Model: req.Model}, upstream: upstream, rate: rate{label: mr.label, metrics: mr.metrics}, hold: hold}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok && repl != nil {
		repl.Set("ai_gateway.model", req.Model)
		repl.Set("ai_gateway.upstream_model", upstream)
		a.repl = repl
	}
	m := newMeter(w, false)
	m.durable = g.durable
	b := &billing{admission: a, g: g, r: r, meter: m, start: time.Now()}
	a.bill = b
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{WroteRequest: b.wroteRequest}))
	defer func() {
		rec := recover()
		m.stopDecoder()
		settleErr := err
		if rec != nil {
			settleErr = fmt.Errorf("panic: %v", rec)
		}
		b.settleMedia(&mr, req, holdAmount, settleErr)
		if rec != nil {
			panic(rec) // the hold is settled; the panic is Caddy's to handle
		}
	}()
	err = next.ServeHTTP(m, r)
	m.finish()
	return err
}

// settleMedia replaces the hold of a media request with its cost:
//
//   - the provider reported usage and the model has token prices: the
//     tokens at those prices, whatever the status;
//   - a 2xx answer otherwise: the media price (images × price per image,
//     ceil(characters × price / 1M), or the request price); a model priced
//     by tokens only whose answer reported no usage is charged its hold,
//     flagged as an estimate;
//   - the client left after the request reached the provider: as a 2xx
//     answer, flagged as an estimate (the provider has the request);
//   - anything else (an error status, no answer): nothing.
func (b *billing) settleMedia(mr *mediaRate, req openaiwire.MediaRequest, holdAmount int64, handlerErr error) {
	if b.done {
		return
	}
	b.done = true
	m := b.meter
	status := finalStatus(m.wroteHeader, m.status, handlerErr)
	u, reported, _ := m.usage()
	charge := keystore.Charge{
		KeyID: b.id.KeyID, Model: b.info.Model, RequestID: b.requestID(),
		Status: status, Duration: time.Since(b.start),
	}
	ok2xx := m.wroteHeader && status >= 200 && status < 300
	left := status == statusClientClosed && b.sent.Load()
	switch {
	case reported && mr.hasTokens && mr.tokens.cost(u) <= keystore.MaxAmount:
		charge.Cost = mr.tokens.cost(u)
		charge.PromptTokens, charge.CompletionTokens = u.PromptTokens, u.CompletionTokens
		charge.CachedTokens, charge.ReasoningTokens = u.CachedTokens, u.ReasoningTokens
		if isImages(b.ep) {
			charge.Note = fmt.Sprintf("images: %d, billed by reported usage", req.Images)
		}
	case (ok2xx || left) && mr.hasUnit:
		charge.Cost = mr.unitCost()
		charge.Note = mr.note()
		if left {
			charge.Estimated, charge.Note = true, "estimated: client left before the response; "+charge.Note
		}
	case ok2xx || left:
		charge.Cost, charge.Estimated = holdAmount, true
		charge.Note = "estimated: no usage reported and no media price; charged the hold"
	}
	if b.commitCharge(charge) {
		b.record(charge, status)
	}
}

// note is the ledger note of a charge by media price.
func (mr *mediaRate) note() string {
	switch {
	case mr.perM:
		return fmt.Sprintf("%s: %d at %s per 1M", mr.what, mr.units, keystore.FormatAmount(mr.unit))
	case mr.what == "request":
		return "per request: " + keystore.FormatAmount(mr.unit)
	}
	return fmt.Sprintf("images: %d × %s at %s", mr.units, mr.what[len("image "):], keystore.FormatAmount(mr.unit))
}

// describeMedia names what a media request asks for, for refusals.
func describeMedia(req openaiwire.MediaRequest, ep endpoint) string {
	switch {
	case isImages(ep):
		return fmt.Sprintf("%d image(s) of %s", max(req.Images, 1), req.Model)
	case req.InputChars > 0:
		return fmt.Sprintf("%d characters of speech with %s", req.InputChars, req.Model)
	}
	return "one request to " + req.Model
}

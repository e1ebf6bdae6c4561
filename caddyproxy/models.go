package caddyproxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/metask/caddy-ai-gateway/caddyproxy/openaiwire"

	"github.com/metask/caddy-ai-gateway/keystore"
)

// Model catalog of balance_guard: aliases, the model allowlist of keys, and
// the gateway's own answer to GET /v1/models.

// Values of BalanceGuard.ModelsEndpoint.
const (
	modelsFromGateway  = "gateway"
	modelsFromUpstream = "upstream"
)

// provisionCatalog validates aliases and builds the model list.
func (g *BalanceGuard) provisionCatalog() error {
	switch g.ModelsEndpoint {
	case "":
		g.ModelsEndpoint = modelsFromGateway
	case modelsFromGateway, modelsFromUpstream:
	default:
		return fmt.Errorf("models_endpoint must be gateway or upstream, got %q", g.ModelsEndpoint)
	}
	names := map[string]bool{}
	for public, target := range g.Aliases {
		if err := checkAlias(public, target); err != nil {
			return err
		}
		if _, isAlias := g.Aliases[target]; isAlias {
			return fmt.Errorf("alias %s: target %q is itself an alias; aliases do not chain", public, target)
		}
		names[public] = true
	}
	for _, p := range g.Prices {
		if !isGlob(p.Model) {
			names[p.Model] = true
		}
	}
	g.models = make([]string, 0, len(names))
	for n := range names {
		g.models = append(g.models, n)
	}
	sort.Strings(g.models)
	g.created = time.Now().Unix()
	return nil
}

func checkAlias(public, target string) error {
	switch {
	case public == "" || target == "":
		return fmt.Errorf("alias needs a public name and a provider model, got %q -> %q", public, target)
	case isGlob(public):
		return fmt.Errorf("alias %q: a public model name cannot be a pattern", public)
	case public == target:
		return fmt.Errorf("alias %q maps to itself", public)
	}
	return nil
}

func isGlob(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// upstreamModel returns the model the provider gets for a public name.
func (g *BalanceGuard) upstreamModel(public string) string {
	if t, ok := g.Aliases[public]; ok {
		return t
	}
	return public
}

// allowed reports whether the key may use a model: the public name or, for
// an alias, the provider's model must be on its allowlist.
func allowed(id keystore.Identity, public, upstream string) bool {
	return id.AllowsModel(public) || (upstream != public && id.AllowsModel(upstream))
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// serveModels answers GET /v1/models and /v1/models/{id} from the catalog,
// showing the caller only the models its key may use.
func (g *BalanceGuard) serveModels(w http.ResponseWriter, id keystore.Identity, isList bool, modelID string) error {
	var visible []modelObject
	for _, m := range g.models {
		if !allowed(id, m, g.upstreamModel(m)) {
			continue
		}
		if !isList && m != modelID {
			continue
		}
		visible = append(visible, modelObject{ID: m, Object: "model", Created: g.created, OwnedBy: "ai-gateway"})
	}
	var v any
	if isList {
		if visible == nil {
			visible = []modelObject{}
		}
		v = struct {
			Object string        `json:"object"`
			Data   []modelObject `json:"data"`
		}{"list", visible}
	} else {
		if len(visible) == 0 {
			return g.refuse(w, &openaiwire.APIError{
				Status: http.StatusNotFound, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeModelNotFound, Reason: openaiwire.CodeModelNotFound,
				Message: fmt.Sprintf("The model %q does not exist or you do not have access to it.", modelID),
			})
		}
		v = visible[0]
	}
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(body)
	return err
}

func modelNotAllowed(id keystore.Identity, model string) *openaiwire.APIError {
	return &openaiwire.APIError{
		Status: http.StatusForbidden, Type: openaiwire.TypeInvalidRequest, Code: openaiwire.CodeModelNotAllowed, Reason: openaiwire.CodeModelNotAllowed,
		Message: fmt.Sprintf("The API key %q may not use the model %q; it may use %s. Ask the operator of this gateway to change the key's allowed models.",
			id.KeyName, model, strings.Join(id.AllowedModels, ", ")),
	}
}

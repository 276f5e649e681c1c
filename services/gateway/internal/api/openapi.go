package api

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

var (
	openAPIOnce sync.Once
	openAPIDoc  map[string]any
)

// openAPI serves the OpenAPI 3 document, built from the route table, so a
// route cannot exist without being documented.
func (s *server) openAPI(w http.ResponseWriter, _ *http.Request) {
	openAPIOnce.Do(func() { openAPIDoc = buildOpenAPI(s.routes(s.reg)) })
	writeJSON(w, http.StatusOK, openAPIDoc)
}

var pathParam = regexp.MustCompile(`\{([a-zA-Z]+)\}`)

var queryDocs = map[string]string{
	"limit":       "page size (default 100, at most 1000)",
	"continue":    "the metadata.continue token of the previous page",
	"warehouse":   "only objects of (freight) or requesting from (stages) this warehouse",
	"stage":       "freight: only freight available to promote into this stage, newest first; promotions: only promotions of this stage",
	"phase":       "only promotions in this phase",
	"freight":     "only promotions of this freight",
	"verifiedIn":  "only freight verified in this stage",
	"currentlyIn": "only freight this stage uses now",
	"project":     "only dead letters of this project",
}

func buildOpenAPI(routes []route) map[string]any {
	paths := map[string]map[string]any{}
	errorResp := func(desc string) map[string]any {
		return map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
	}
	for _, rt := range routes {
		item, ok := paths[rt.path]
		if !ok {
			item = map[string]any{}
			paths[rt.path] = item
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, map[string]any{"name": q, "in": "query", "required": false, "description": queryDocs[q], "schema": map[string]any{"type": "string"}})
		}
		if rt.idempotent {
			params = append(params, map[string]any{"name": HeaderIdempotencyKey, "in": "header", "required": false,
				"description": "the same key (same caller, same route, same body) within 24h returns the first answer (Idempotent-Replayed: true) instead of acting again; 409 while the first runs, 422 with another body",
				"schema":      map[string]any{"type": "string", "maxLength": 255}})
		}
		if rt.stream {
			params = append(params, map[string]any{"name": "Last-Event-ID", "in": "header", "required": false, "description": "resume after this event id", "schema": map[string]any{"type": "string"}})
		}
		status := rt.status
		if status == 0 {
			status = http.StatusOK
		}
		content := map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}
		if rt.stream {
			content = map[string]any{"text/event-stream": map[string]any{"schema": map[string]any{"type": "string"}}}
		}
		if rt.path == "/metrics" {
			content = map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}
		}
		responses := map[string]any{
			strconv.Itoa(status): map[string]any{"description": "success", "content": content},
			"400":                errorResp("invalid input"),
		}
		if rt.access != public {
			responses["401"] = errorResp("missing or invalid bearer token")
			responses["403"] = errorResp("the caller's role does not allow this")
		}
		if strings.Contains(rt.path, "{") {
			responses["404"] = errorResp("not found")
		}
		op := map[string]any{
			"operationId": operationID(rt),
			"summary":     rt.summary,
			"description": "Access: " + accessNames[rt.access] + ".",
			"responses":   responses,
			"tags":        []string{tagOf(rt.path)},
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.access == public {
			op["security"] = []any{}
		}
		if rt.body != "" {
			ct := map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}
			if rt.path == "/v1/resources" {
				ct["application/yaml"] = map[string]any{"schema": map[string]any{"type": "string"}}
			}
			op["requestBody"] = map[string]any{"description": rt.body, "required": rt.method != http.MethodDelete || rt.path == "/v1/resources", "content": ct}
		}
		item[strings.ToLower(rt.method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":       "Caravan API",
			"version":     "v1",
			"description": "Caravan's REST API: Kargo's resources and actions over NATS JetStream. Errors are {code, message, details[]}.",
		},
		"paths":    paths,
		"security": []any{map[string]any{"bearer": []any{}}},
		"components": map[string]any{
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
			"schemas": map[string]any{
				"Error": map[string]any{
					"type":     "object",
					"required": []string{"code", "message"},
					"properties": map[string]any{
						"code":    map[string]any{"type": "string"},
						"message": map[string]any{"type": "string"},
						"details": map[string]any{"type": "array", "items": map[string]any{"type": "object", "properties": map[string]any{
							"document": map[string]any{"type": "integer"}, "kind": map[string]any{"type": "string"},
							"name": map[string]any{"type": "string"}, "field": map[string]any{"type": "string"}, "message": map[string]any{"type": "string"},
						}}},
					},
				},
			},
		},
	}
}

func operationID(rt route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.method))
	for _, part := range strings.Split(rt.path, "/") {
		part = strings.Trim(part, "{}")
		part = strings.ReplaceAll(part, "-", "")
		part = strings.ReplaceAll(part, ".", "")
		if part == "" {
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}

func tagOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case parts[0] != "v1":
		return "operations"
	case len(parts) >= 4 && parts[1] == "projects":
		return parts[3]
	case len(parts) >= 2:
		return parts[1]
	}
	return "v1"
}

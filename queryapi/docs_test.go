package queryapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gofiber/fiber/v2"

	"github.com/clickagg/clickagg"
)

// loadSpec parses and validates the embedded document with kin-openapi.
func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openAPISpec)
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not valid OpenAPI: %v", err)
	}
	return doc
}

// TestOpenAPISpecValid: the document is valid OpenAPI 3.0.x (kin-openapi's
// checks, examples against their schemas included).
func TestOpenAPISpecValid(t *testing.T) {
	doc := loadSpec(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.0.") || doc.Paths.Len() == 0 {
		t.Errorf("openapi = %q with %d paths, want 3.0.x and some", doc.OpenAPI, doc.Paths.Len())
	}
}

// TestOpenAPISecurity: the document asks for the bearer token exactly where
// auth.go does, so that Swagger UI's "Authorize" sends it on "Try it out".
func TestOpenAPISecurity(t *testing.T) {
	doc := loadSpec(t)
	ref := doc.Components.SecuritySchemes["bearer"]
	if ref == nil || ref.Value.Type != "http" || !strings.EqualFold(ref.Value.Scheme, "bearer") {
		t.Fatalf("components.securitySchemes.bearer should be http bearer: %+v", ref)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			reqs := doc.Security
			if op.Security != nil {
				reqs = *op.Security
			}
			bearer := slices.ContainsFunc(reqs, func(r openapi3.SecurityRequirement) bool { _, ok := r["bearer"]; return ok })
			optional := slices.ContainsFunc(reqs, func(r openapi3.SecurityRequirement) bool { return len(r) == 0 })
			if open := routeClass(path) == openRoute; open && len(reqs) > 0 {
				t.Errorf("%s %s is open but the document asks for %v", method, path, reqs)
			} else if !open && (!bearer || optional) {
				t.Errorf("%s %s needs a token but the document asks for %v", method, path, reqs)
			}
		}
	}
}

// TestOpenAPIQueryErrorsDocumented: every operation with query parameters
// documents its 400 answer as a ParamError ({"error","param"}).
func TestOpenAPIQueryErrorsDocumented(t *testing.T) {
	doc := loadSpec(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			query := slices.ContainsFunc(op.Parameters, func(p *openapi3.ParameterRef) bool { return p.Value.In == openapi3.ParameterInQuery })
			if !query {
				continue
			}
			r := op.Responses.Status(http.StatusBadRequest)
			if r == nil {
				t.Errorf("%s %s: has query parameters but no 400 answer", method, path)
				continue
			}
			mt := r.Value.Content.Get(fiber.MIMEApplicationJSON)
			if mt == nil || mt.Schema == nil || mt.Schema.Ref != "#/components/schemas/ParamError" {
				t.Errorf("%s %s: 400 answer is not the ParamError schema", method, path)
			}
		}
	}
}

func get(t *testing.T, app *fiber.App, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func docsApp() *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	registerDocs(app)
	return app
}

// TestDocsRoutes: /openapi.json is the embedded document; /docs is a page
// under a strict Content-Security-Policy that loads Swagger UI from this
// server only, with no inline script, and every file it names is served
// with its type.
func TestDocsRoutes(t *testing.T) {
	app := docsApp()
	resp, body := get(t, app, "/openapi.json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/openapi.json: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("/openapi.json Content-Type = %q", ct)
	}
	if !bytes.Equal(body, openAPISpec) {
		t.Error("/openapi.json does not serve the embedded document")
	}

	resp, body = get(t, app, "/docs")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/docs: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("/docs Content-Type = %q", ct)
	}
	checkCSP(t, resp.Header.Get("Content-Security-Policy"))
	page := string(body)
	if !strings.Contains(page, `id="swagger-ui"`) {
		t.Error(`/docs has no element with id="swagger-ui" for Swagger UI`)
	}

	// Nothing inline: scripts are files, no handlers, no style attributes.
	for _, m := range regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(page, -1) {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			t.Errorf("/docs has an inline script: %s", m[0])
		}
	}
	if m := regexp.MustCompile(`(?i)<style|\son[a-z]+\s*=|\sstyle\s*=`).FindString(page); m != "" {
		t.Errorf("/docs has inline style or script: %q", m)
	}

	// Every file named is ours and served with its type.
	want := map[string]string{".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
	var scripts, sheets int
	for _, m := range regexp.MustCompile(`(?i)\s(?:src|href)\s*=\s*"([^"]*)"`).FindAllStringSubmatch(page, -1) {
		ref := m[1]
		if !strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, "//") {
			t.Errorf("/docs names %q: only paths on this server", ref)
			continue
		}
		ext := ref[strings.LastIndex(ref, "."):]
		switch ext {
		case ".js":
			scripts++
		case ".css":
			sheets++
		}
		resp, body := get(t, app, ref)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: %d, %d bytes", ref, resp.StatusCode, len(body))
		}
		if ct := resp.Header.Get("Content-Type"); want[ext] == "" || !strings.HasPrefix(ct, want[ext]) {
			t.Errorf("%s: Content-Type %q", ref, ct)
		}
		if strings.HasPrefix(ref, "/docs/") && resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no X-Content-Type-Options: nosniff", ref)
		}
	}
	if scripts < 2 || sheets < 1 {
		t.Errorf("/docs names %d scripts and %d style sheets, want Swagger UI's bundle, its style sheet and docs.js", scripts, sheets)
	}

	// The initializer loads our document only and keeps no token.
	js := string(docsJS)
	for _, s := range []string{`url: "/openapi.json"`, `dom_id: "#swagger-ui"`, "tryItOutEnabled: true", "persistAuthorization: false", "validatorUrl: null"} {
		if !strings.Contains(js, s) {
			t.Errorf("docs.js lacks %s", s)
		}
	}
	if strings.Contains(js, "://") {
		t.Error("docs.js names an outside URL")
	}

	if resp, _ := get(t, app, "/docs/swagger-ui-bundle.js.map"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/docs/swagger-ui-bundle.js.map: %d, want 404", resp.StatusCode)
	}
}

// checkCSP: nothing from elsewhere, no inline or eval'd script.
func checkCSP(t *testing.T, csp string) {
	t.Helper()
	dirs := map[string][]string{}
	for _, d := range strings.Split(csp, ";") {
		if f := strings.Fields(d); len(f) > 0 {
			dirs[f[0]] = f[1:]
		}
	}
	if !slices.Equal(dirs["default-src"], []string{"'none'"}) {
		t.Errorf("CSP %q: want default-src 'none'", csp)
	}
	if !slices.Equal(dirs["script-src"], []string{"'self'"}) {
		t.Errorf("CSP %q: want script-src 'self' alone", csp)
	}
	for name, srcs := range dirs {
		for _, s := range srcs {
			switch {
			case s == "'self'" || s == "'none'":
			case s == "data:" && name == "img-src":
			default:
				t.Errorf("CSP %q: %s allows %s", csp, name, s)
			}
		}
	}
	for _, name := range []string{"style-src", "img-src", "connect-src"} {
		if dirs[name] == nil {
			t.Errorf("CSP %q: no %s, the page needs it", csp, name)
		}
	}
}

func TestDocsGzip(t *testing.T) {
	app := docsApp()
	resp, plain := get(t, app, "/docs/swagger-ui-bundle.js")
	if resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(plain, swaggerUIBundle) {
		t.Errorf("without Accept-Encoding: Content-Encoding %q, %d bytes", resp.Header.Get("Content-Encoding"), len(plain))
	}
	resp, packed := get(t, app, "/docs/swagger-ui-bundle.js", "Accept-Encoding", "gzip, deflate, br")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("with Accept-Encoding gzip: Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	if !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("Vary = %q", resp.Header.Get("Vary"))
	}
	if !strings.Contains(resp.Header.Get("Cache-Control"), "max-age=") {
		t.Errorf("Cache-Control = %q", resp.Header.Get("Cache-Control"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, swaggerUIBundle) || len(packed) > len(got)/2 {
		t.Errorf("gzipped bundle: %d bytes unpacked to %d, want %d", len(packed), len(got), len(swaggerUIBundle))
	}
}

// TestEveryRouteDocumented compares the routes of the full app (every
// optional part switched on) with the document, both ways: every registered
// route is documented and every documented route is registered.
func TestEveryRouteDocumented(t *testing.T) {
	app := New(Options{
		Ingest:          func(c *fiber.Ctx) error { return nil },
		IngestStatus:    func() any { return nil },
		Metrics:         docsNopMetrics{},
		Direct:          docsNopMetrics{},
		CacheStats:      func() any { return nil },
		ReconcileStatus: func() any { return nil },
		Prometheus:      http.NotFoundHandler(),
	})
	// Not API routes: the docs page's files, and "/", the console's
	// redirect to its dashboard (console.Register).
	page := func(path string) bool { return path == "/" || strings.HasPrefix(path, "/docs/") }
	documented := map[string]bool{}
	for path, item := range loadSpec(t).Paths.Map() {
		for m := range item.Operations() {
			if !page(path) {
				documented[m+" "+path] = true
			}
		}
	}
	registered := map[string]bool{}
	for _, r := range app.GetRoutes(true) { // true: without middleware (Use)
		if r.Method == fiber.MethodHead || r.Path == "" || r.Path == "*" || r.Path == "/*" || page(r.Path) {
			continue // HEAD comes with every GET; catch-alls are not routes
		}
		registered[r.Method+" "+docsOpenAPIPath(r.Path)] = true
	}
	var undocumented, unregistered []string
	for k := range registered {
		if !documented[k] {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !registered[k] {
			unregistered = append(unregistered, k)
		}
	}
	sort.Strings(undocumented)
	sort.Strings(unregistered)
	for _, k := range undocumented {
		t.Errorf("route %s is served but not in queryapi/openapi.json", k)
	}
	for _, k := range unregistered {
		t.Errorf("route %s is in queryapi/openapi.json but New does not register it", k)
	}
}

func TestDocsOpenAPIPath(t *testing.T) {
	for in, want := range map[string]string{
		"/healthz":                         "/healthz",
		"/v1/metrics/:country/:ad_format":  "/v1/metrics/{country}/{ad_format}",
		"/v1/ads/:ad_id/series":            "/v1/ads/{ad_id}/series",
		"/v1/ads/:ad_id<minLen(1)>/series": "/v1/ads/{ad_id}/series",
		"/v1/x/:opt?":                      "/v1/x/{opt}",
	} {
		if got := docsOpenAPIPath(in); got != want {
			t.Errorf("docsOpenAPIPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// docsNopMetrics stands in for the metrics services: the routes only need
// to exist.
type docsNopMetrics struct{}

func (docsNopMetrics) Metrics(context.Context, clickagg.MetricsQuery) (*clickagg.MetricsResult, error) {
	return nil, nil
}

func (docsNopMetrics) Series(context.Context, clickagg.SeriesQuery) (*clickagg.SeriesResult, error) {
	return nil, nil
}

func (docsNopMetrics) TopAds(context.Context, clickagg.TopQuery) (*clickagg.TopResult, error) {
	return nil, nil
}

var docsFiberParam = regexp.MustCompile(`:([A-Za-z0-9_]+)(<[^>]*>)?\??`)

// docsOpenAPIPath turns Fiber's "/v1/ads/:ad_id/series" into OpenAPI's
// "/v1/ads/{ad_id}/series", dropping constraints and optional marks.
func docsOpenAPIPath(p string) string {
	return docsFiberParam.ReplaceAllString(p, "{$1}")
}

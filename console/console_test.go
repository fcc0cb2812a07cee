package console

import (
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
)

func get(t *testing.T, app *fiber.App, path string) (int, map[string]string, string) {
	t.Helper()
	resp, err := app.Test(httptest.NewRequest("GET", path, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	h := map[string]string{}
	for k := range resp.Header {
		h[k] = resp.Header.Get(k)
	}
	return resp.StatusCode, h, string(body)
}

func TestRoutes(t *testing.T) {
	app := fiber.New()
	Register(app)
	for _, c := range []struct{ path, location string }{
		{"/", "/dashboard/"},
		{"/dashboard", "/dashboard/"},
		{"/dashboard?window=6h&country=US", "/dashboard/?window=6h&country=US"},
	} {
		code, h, _ := get(t, app, c.path)
		if code/100 != 3 || h["Location"] != c.location {
			t.Errorf("GET %s: %d to %q, want a redirect to %q", c.path, code, h["Location"], c.location)
		}
	}

	code, h, page := get(t, app, "/dashboard/")
	if code != 200 || !strings.HasPrefix(h["Content-Type"], "text/html") {
		t.Fatalf("GET /dashboard/: %d %s", code, h["Content-Type"])
	}
	if h["Content-Security-Policy"] != CSP || h["X-Content-Type-Options"] != "nosniff" {
		t.Errorf("headers: %v", h)
	}
	if strings.Contains(page, "<script>") || regexp.MustCompile(`\son[a-z]+=`).MatchString(page) || strings.Contains(page, "style=") {
		t.Error("the page has inline script, handlers or style, which its CSP refuses")
	}
	// Every file the page names is served, same-origin, with its type.
	types := map[string]string{".js": "text/javascript", ".css": "text/css"}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	total := len(page)
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "data:") || strings.HasPrefix(ref, "../") {
			continue
		}
		if strings.Contains(ref, "//") {
			t.Errorf("the page loads %s from elsewhere", ref)
			continue
		}
		code, h, body := get(t, app, "/dashboard/"+ref)
		total += len(body)
		want := types[ref[strings.LastIndex(ref, "."):]]
		if code != 200 || !strings.HasPrefix(h["Content-Type"], want) || h["Content-Security-Policy"] != CSP {
			t.Errorf("GET %s: %d %q, want 200 %s with the CSP", ref, code, h["Content-Type"], want)
		}
	}
	if len(refs) < 4 {
		t.Errorf("the page names %d files, want its script, style and uPlot's", len(refs))
	}
	// "Loads in a few hundred KB": everything, uncompressed.
	if total > 300<<10 {
		t.Errorf("the page and its files are %d bytes", total)
	}
	if code, _, _ := get(t, app, "/dashboard/nothing.js"); code != 404 {
		t.Errorf("a missing file: %d, want 404", code)
	}
}

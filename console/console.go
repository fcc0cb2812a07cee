// Package console is clickagg's web console: one dashboard page over the
// public API (no route of its own beyond its files), with uPlot vendored
// from npm for the charts. Everything it loads is embedded in the binary.
package console

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/etag"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
)

//go:embed static
var static embed.FS

// Path is where the dashboard is served; "/" redirects there.
const Path = "/dashboard"

// CSP is the Content-Security-Policy of the pages clickagg serves (this
// dashboard and Swagger UI at /docs): their own files only, and fetches to
// their own origin (the API). uPlot and Swagger UI set styles through the
// CSSOM (element.style), which style-src does not govern; data: images are
// Swagger UI's icons.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register adds GET / (a redirect) and GET /dashboard with its files. The
// files are open routes: the page asks for a token when the API wants one.
func Register(r fiber.Router) {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	r.Get("/", func(c *fiber.Ctx) error { return c.Redirect(Path+"/", fiber.StatusFound) })
	r.Use(Path, func(c *fiber.Ctx) error {
		// The page's links are relative to the directory: /dashboard?x
		// becomes /dashboard/?x (Fiber's routes ignore the slash).
		if c.Path() == Path {
			q := string(c.Request().URI().QueryString())
			if q != "" {
				q = "?" + q
			}
			return c.Redirect(Path+"/"+q, fiber.StatusMovedPermanently)
		}
		c.Set(fiber.HeaderContentSecurityPolicy, CSP)
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		c.Set(fiber.HeaderReferrerPolicy, "no-referrer")
		// Small files: revalidated by ETag rather than cached stale across
		// an upgrade of the binary.
		c.Set(fiber.HeaderCacheControl, "no-cache")
		return c.Next()
	}, etag.New(), filesystem.New(filesystem.Config{
		Root:   http.FS(files),
		Index:  "index.html",
		Browse: false,
	}))
}

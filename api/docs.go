package api

import (
	"net/http"

	"github.com/gin-gonic/gin"
	swaggerfiles "github.com/swaggo/files/v2"
)

// swaggerInit points the bundled Swagger UI at the served contract. It is
// a file, not an inline script, so the docs page runs under a strict
// Content-Security-Policy.
const swaggerInit = `window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "../openapi.yaml",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    tryItOutEnabled: true,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
};
`

var docsFiles = map[string]string{
	"index.html":                      "text/html; charset=utf-8",
	"index.css":                       "text/css; charset=utf-8",
	"swagger-ui.css":                  "text/css; charset=utf-8",
	"swagger-ui-bundle.js":            "text/javascript; charset=utf-8",
	"swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
	"favicon-16x16.png":               "image/png",
	"favicon-32x32.png":               "image/png",
}

func (s *Server) routeDocs(r *gin.Engine) {
	r.GET("/openapi.yaml", func(c *gin.Context) {
		c.Data(http.StatusOK, "application/yaml; charset=utf-8", s.openapi)
	})
	r.GET("/docs", func(c *gin.Context) { c.Redirect(http.StatusMovedPermanently, "/docs/") })
	r.GET("/docs/*file", func(c *gin.Context) {
		name := c.Param("file")[1:]
		if name == "" {
			name = "index.html"
		}
		c.Header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
		c.Header("X-Content-Type-Options", "nosniff")
		if name == "swagger-initializer.js" {
			c.Data(http.StatusOK, "text/javascript; charset=utf-8", []byte(swaggerInit))
			return
		}
		ctype, ok := docsFiles[name]
		if !ok {
			s.renderProblem(c, newProblem(http.StatusNotFound, "route_not_found", "no such file in the docs"))
			return
		}
		// Streamed from the embedded file, not copied: the bundle is large.
		f, err := swaggerfiles.FS.Open(name)
		if err != nil {
			s.fail(c, err)
			return
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil {
			s.fail(c, err)
			return
		}
		c.Header("Cache-Control", "public, max-age=3600")
		c.DataFromReader(http.StatusOK, info.Size(), ctype, f, nil)
	})
}

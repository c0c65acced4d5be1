package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/invoke"
)

// invokeRequest is the dynamic form's body.
type invokeRequest struct {
	Method      string                  `json:"method"`
	RelativeURI string                  `json:"relativeUri"`
	PathParams  map[string]string       `json:"pathParams"`
	QueryParams map[string]stringOrList `json:"queryParams"`
	Headers     map[string]string       `json:"headers"`
	// Body is any JSON value, sent as JSON; RawBody is sent as it is.
	Body    json.RawMessage `json:"body"`
	RawBody *string         `json:"rawBody"`
}

// stringOrList reads a query parameter value: "a" or ["a", "b"].
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return invalidField("queryParams", "values must be strings or arrays of strings")
	}
	*s = many
	return nil
}

var invokeMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// invocable looks the connection up in the cache (no database query on a
// warm path) and checks that it may be invoked.
func (s *Server) invocable(c *gin.Context, name string) *connections.Connection {
	conn, err := s.cache.Get(c.Request.Context(), name)
	if err != nil {
		s.fail(c, err)
		return nil
	}
	if !conn.Role.Invocable() {
		s.fail(c, newProblem(http.StatusForbidden, "connection_not_invocable",
			"connections with role "+string(conn.Role)+" cannot be invoked"))
		return nil
	}
	return conn
}

// ginContextKey carries the gin context through the proxy to invokeError.
type ginContextKey struct{}

func withGin(c *gin.Context) *http.Request {
	return c.Request.WithContext(context.WithValue(c.Request.Context(), ginContextKey{}, c))
}

// invokeError renders the proxy's errors as problems.
func (s *Server) invokeError(w http.ResponseWriter, r *http.Request, err error) {
	c, ok := r.Context().Value(ginContextKey{}).(*gin.Context)
	if !ok {
		http.Error(w, err.Error(), problemFor(err).status)
		return
	}
	s.fail(c, err)
}

// invokeTransparent forwards ANY /invoke/{name}/{relativePath...}?{query}:
// the method, body, query and allowlisted headers go to baseUrl +
// relativePath, with the credential injected.
func (s *Server) invokeTransparent(c *gin.Context) {
	name := c.Param("name")
	// The relative path is taken from the escaped path as the caller sent
	// it, so that %2F and friends reach the resolver untouched.
	escaped := c.Request.URL.EscapedPath()
	prefix := "/invoke/" + name
	if !strings.HasPrefix(escaped, prefix) || len(escaped) > len(prefix) && escaped[len(prefix)] != '/' {
		s.fail(c, newProblem(http.StatusBadRequest, "invalid_relative_uri", "the connection name must not be percent-encoded"))
		return
	}
	conn := s.invocable(c, name)
	if conn == nil {
		return
	}
	rel := escaped[len(prefix):]
	if c.Request.URL.RawQuery != "" || c.Request.URL.ForceQuery {
		rel += "?" + c.Request.URL.RawQuery
	}
	s.proxy.Serve(c.Writer, withGin(c), invoke.Call{Conn: conn, Target: invoke.Target{RelativeURI: rel},
		Method: c.Request.Method, Header: c.Request.Header, Body: c.Request.Body,
		ContentLength: c.Request.ContentLength, RequestID: requestID(c)})
}

// invokeDynamic forwards POST /api/v1/connections/{name}/invoke: the
// relative URI is a template filled from pathParams at call time.
func (s *Server) invokeDynamic(c *gin.Context) {
	var req invokeRequest
	if !s.bind(c, &req) {
		return
	}
	method := strings.ToUpper(req.Method)
	if method == "" {
		method = "GET"
	}
	if !slices.Contains(invokeMethods, method) {
		s.fail(c, invalidField("method", "must be one of "+strings.Join(invokeMethods, ", ")))
		return
	}
	if len(req.Body) > 0 && req.RawBody != nil {
		s.fail(c, invalidField("rawBody", "send either body (JSON) or rawBody (text), not both"))
		return
	}
	header := http.Header{}
	for k, v := range req.Headers {
		if strings.ContainsAny(v, "\r\n\x00") || k == "" {
			s.fail(c, invalidField("headers."+k, "is not a valid header"))
			return
		}
		header.Set(k, v)
	}
	var body []byte
	switch {
	case req.RawBody != nil:
		body = []byte(*req.RawBody)
	case len(req.Body) > 0 && !bytes.Equal(req.Body, []byte("null")):
		body = req.Body
		if header.Get("Content-Type") == "" {
			header.Set("Content-Type", "application/json")
		}
	}
	query := url.Values{}
	for k, v := range req.QueryParams {
		query[k] = v
	}
	conn := s.invocable(c, c.Param("name"))
	if conn == nil {
		return
	}
	call := invoke.Call{Conn: conn, Method: method, Header: header, RequestID: requestID(c), Replayable: true,
		Target: invoke.Target{RelativeURI: req.RelativeURI, Template: true, PathParams: req.PathParams, Query: query}}
	if body != nil {
		call.Body, call.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	s.proxy.Serve(c.Writer, withGin(c), call)
}

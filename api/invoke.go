package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

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
		s.fail(c, fmt.Errorf("%w: connections with role %s cannot be invoked", connections.ErrNotInvocable, conn.Role))
		return nil
	}
	return conn
}

// invokeSlack is how much longer than the connection's timeout an invoke
// may take to read its request body and write its answer.
const invokeSlack = 10 * time.Second

// serve forwards call and renders connmgr's own error, if any. The
// request's read and write deadlines follow the connection's timeout, so a
// long stream is not cut by the server's defaults and a stalled caller
// cannot hold the connection longer.
func (s *Server) serve(c *gin.Context, call invoke.Call) {
	rc := http.NewResponseController(c.Writer)
	until := time.Now().Add(max(call.Conn.Timeout, connections.MinTimeout) + invokeSlack)
	_ = rc.SetReadDeadline(until)
	_ = rc.SetWriteDeadline(until)
	if err := s.proxy.Serve(c.Writer, c.Request, call); err != nil {
		s.fail(c, err)
	}
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
	if oneEncodedPath(rel) {
		s.fail(c, newProblem(http.StatusBadRequest, "invalid_relative_uri",
			"the relative path holds an encoded '/' or '\\' but no '/': it looks like a whole path encoded as one "+
				"segment, as generated clients send a path parameter; send '/' unencoded, or use "+
				"POST /api/v1/connections/{name}/invoke (operationId invokeConnection), whose relativeUri is a template"))
		return
	}
	if c.Request.URL.RawQuery != "" || c.Request.URL.ForceQuery {
		rel += "?" + c.Request.URL.RawQuery
	}
	s.serve(c, invoke.Call{Conn: conn, Target: invoke.Target{RelativeURI: rel},
		Method: c.Request.Method, Header: c.Request.Header, Body: c.Request.Body,
		ContentLength: c.Request.ContentLength, RequestID: requestID(c)})
}

// oneEncodedPath reports whether the escaped relative path rel (after
// /invoke/{name}) is one segment holding an encoded slash or backslash:
// "/orders%2F17", which is how generated clients (oapi-codegen,
// openapi-fetch) send the path parameter "orders/17". Going upstream as the
// single segment "orders%2F17" would silently call another resource, so it
// is refused. With a literal '/' elsewhere in the path ("projects/group%2Fproj")
// the encoded slash is data and stays as it is.
func oneEncodedPath(rel string) bool {
	seg := strings.TrimPrefix(rel, "/")
	if strings.IndexByte(seg, '/') >= 0 {
		return false
	}
	for i := 0; i+2 < len(seg); i++ {
		if seg[i] == '%' && (seg[i+1] == '2' && (seg[i+2] == 'F' || seg[i+2] == 'f') ||
			seg[i+1] == '5' && (seg[i+2] == 'C' || seg[i+2] == 'c')) {
			return true
		}
	}
	return false
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
	// connmgr's hops stay counted whatever the form (see invoke.MaxHops).
	header["Via"] = c.Request.Header.Values("Via")
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
	s.serve(c, call)
}

package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
)

// decodeJSON reads one JSON value from r into v, strictly: unknown fields,
// trailing data and type mismatches are errors that name the field.
func decodeJSON(r io.Reader, v any) error {
	// The decoder would turn invalid UTF-8 into U+FFFD and store it: a
	// body that is not UTF-8 is refused as RFC 8259 §8.1 says.
	b, err := io.ReadAll(r)
	if err != nil {
		return jsonProblem(err)
	}
	if !utf8.Valid(b) {
		return newProblem(http.StatusBadRequest, "malformed_request", "the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonProblem(err)
		}
		return newProblem(http.StatusBadRequest, "malformed_request", "the body must hold exactly one JSON value")
	}
	return nil
}

func jsonProblem(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	var pe *problemError
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, io.EOF):
		return newProblem(http.StatusBadRequest, "malformed_request", "the request body is empty; send a JSON object")
	case errors.As(err, &syn):
		return newProblem(http.StatusBadRequest, "malformed_request", fmt.Sprintf("malformed JSON at byte %d", syn.Offset))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return newProblem(http.StatusBadRequest, "malformed_request", "the JSON body ends too early")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return newProblem(http.StatusBadRequest, "malformed_request", "the body must be a JSON "+jsonType(typ.Type.Kind().String()))
		}
		return invalidField(field, "must be "+article(jsonType(typ.Type.Kind().String())))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalidField(field, "is not a known field")
	}
	return newProblem(http.StatusBadRequest, "malformed_request", "the body is not valid JSON for this operation")
}

func jsonType(kind string) string {
	switch kind {
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "integer"
	case "float32", "float64":
		return "number"
	}
	return "value of another type"
}

func article(t string) string {
	if strings.ContainsRune("aeiou", rune(t[0])) {
		return "an " + t
	}
	return "a " + t
}

// bind decodes the JSON request body into v, rendering a problem and
// returning false when it cannot.
func (s *Server) bind(c *gin.Context, v any) bool {
	if ct := c.GetHeader("Content-Type"); ct != "" && !jsonMediaType(ct) {
		s.renderProblem(c, newProblem(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"send the body as Content-Type: application/json"))
		return false
	}
	if err := decodeJSON(c.Request.Body, v); err != nil {
		s.fail(c, err)
		return false
	}
	return true
}

// jsonMediaType reports whether a Content-Type is JSON (application/json
// or a +json type such as application/merge-patch+json).
func jsonMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// cursors issues and checks opaque page cursors. A cursor is the last key
// of a page, signed with HMAC-SHA256, so a cursor connmgr did not issue is
// refused.
type cursors struct{ key []byte }

func (cs cursors) encode(kind, last string) string {
	payload := kind + "\x00" + last
	mac := hmac.New(sha256.New, cs.key)
	mac.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." +
		base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:16])
}

var errBadCursor = newProblem(http.StatusBadRequest, "invalid_cursor", "the cursor was not issued by this service; start again without one")

func (cs cursors) decode(kind, cursor string) (string, error) {
	p64, m64, ok := strings.Cut(cursor, ".")
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sum, err2 := base64.RawURLEncoding.DecodeString(m64)
	if !ok || err1 != nil || err2 != nil || len(cursor) > 1024 {
		return "", errBadCursor
	}
	mac := hmac.New(sha256.New, cs.key)
	mac.Write(payload)
	if !hmac.Equal(mac.Sum(nil)[:16], sum) {
		return "", errBadCursor
	}
	k, last, ok := bytes.Cut(payload, []byte{0})
	if !ok || string(k) != kind {
		return "", errBadCursor
	}
	return string(last), nil
}

package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/connmgr/connmgr"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/manifest"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/security/keyring"
)

// Transfer configures connections as code: apply and export.
type Transfer struct {
	// Identity opens the ${sealed:...} values of applied documents
	// (CONNMGR_IMPORT_IDENTITY); without one, sealed values are refused.
	Identity *keyring.Identity
	// Tokens stores imported refresh tokens and reads the ones an export
	// seals; without it, neither is done.
	Tokens security.TokenStore
}

type applyRequest struct {
	Documents []json.RawMessage `json:"documents"`
	DryRun    bool              `json:"dryRun"`
	Prune     bool              `json:"prune"`
	Selector  map[string]string `json:"selector"`
	Prefix    string            `json:"prefix"`
}

// documentBody is one document of a file of connections (see package
// manifest).
type documentBody struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   *metadataBody   `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
	Token      *documentToken  `json:"token,omitempty"`
}

type metadataBody struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// documentToken carries an exported refresh token, always sealed.
type documentToken struct {
	RefreshToken string `json:"refreshToken"`
}

// readOnlyFields are the fields of a connection answer that a document's
// spec may not hold: the service sets them.
var readOnlyFields = []string{"identifier", "status", "statusReason", "statusSince", "token", "lastTest", "version",
	"createdAt", "updatedAt", "createdBy", "updatedBy", "warnings"}

type planBody struct {
	DryRun  bool           `json:"dryRun"`
	Summary map[string]int `json:"summary"`
	Items   []planItemBody `json:"items"`
}

type planItemBody struct {
	Name         string        `json:"name"`
	Action       string        `json:"action"`
	Document     *int          `json:"document,omitempty"`
	Version      int64         `json:"version,omitempty"`
	Done         bool          `json:"done"`
	RefreshToken bool          `json:"refreshToken,omitempty"`
	Changes      []changeBody  `json:"changes,omitempty"`
	Warnings     []warningBody `json:"warnings,omitempty"`
}

type changeBody struct {
	Field  string `json:"field"`
	Old    string `json:"old,omitempty"`
	New    string `json:"new,omitempty"`
	Secret bool   `json:"secret,omitempty"`
	Change string `json:"change,omitempty"`
}

type warningBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func warningsOut(ws []connections.Warning) []warningBody {
	out := make([]warningBody, 0, len(ws))
	for _, w := range ws {
		out = append(out, warningBody{w.Code, w.Message})
	}
	return out
}

func planOut(p *connections.Plan) planBody {
	out := planBody{DryRun: p.DryRun, Items: []planItemBody{}, Summary: map[string]int{}}
	for _, a := range []connections.Action{connections.ActionCreate, connections.ActionUpdate, connections.ActionUnchanged, connections.ActionDelete} {
		out.Summary[string(a)] = p.Count(a)
	}
	for _, it := range p.Items {
		b := planItemBody{Name: it.Name, Action: string(it.Action), Version: it.Version, Done: it.Done, RefreshToken: it.RefreshToken}
		if it.Document >= 0 {
			b.Document = &it.Document
		}
		for _, ch := range it.Changes {
			b.Changes = append(b.Changes, changeBody(ch))
		}
		if len(it.Warnings) > 0 {
			b.Warnings = warningsOut(it.Warnings)
		}
		out.Items = append(out.Items, b)
	}
	return out
}

// applyConnections serves POST /api/v1/connections:apply: the plan that
// makes the stored connections what the documents declare, carried out
// unless dryRun.
func (s *Server) applyConnections(c *gin.Context) {
	var req applyRequest
	if !s.bind(c, &req) {
		return
	}
	if req.Documents == nil {
		s.fail(c, invalidField("documents", "is required: an array of documents (apiVersion, kind, metadata, spec)"))
		return
	}
	if len(req.Documents) > connections.MaxDocuments {
		s.fail(c, invalidField("documents", fmt.Sprintf("at most %d documents in one apply", connections.MaxDocuments)))
		return
	}
	docs, errs := s.readDocuments(req.Documents)
	if len(errs) > 0 {
		s.fail(c, errs)
		return
	}
	opts := connections.ApplyOptions{DryRun: req.DryRun, Prune: req.Prune, Selector: req.Selector, Prefix: req.Prefix,
		Visible: apiKey(c).MaySee}
	if s.transfer.Tokens != nil {
		opts.Tokens = &tokenSeeder{tokens: s.transfer.Tokens, manager: s.tokens}
	}
	plan, err := s.conns.Apply(c.Request.Context(), actor(c), docs, opts)
	var ae *connections.ApplyError
	if errors.As(err, &ae) {
		if p := problemFor(ae.Err); p.status < 500 {
			q := *p
			q.detail = ae.Error()
			err = &q
		}
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	s.writeJSON(c, http.StatusOK, planOut(plan))
}

// readDocuments decodes, checks and opens every document, collecting
// every error with its documents[i]. path.
func (s *Server) readDocuments(raw []json.RawMessage) ([]connections.Document, connections.ValidationErrors) {
	var errs connections.ValidationErrors
	docs := make([]connections.Document, 0, len(raw))
	for i, r := range raw {
		d, err := s.readDocument(i, r)
		if err != nil {
			errs = append(errs, documentErrors(i, err)...)
			continue
		}
		docs = append(docs, d)
	}
	return docs, errs
}

// documentErrors returns err as validation errors under documents[i].
func documentErrors(i int, err error) connections.ValidationErrors {
	at := fmt.Sprintf("documents[%d]", i)
	var ves connections.ValidationErrors
	if errors.As(under(at, err), &ves) {
		return ves
	}
	return connections.ValidationErrors{{Field: at, Reason: "is not a valid document"}}
}

// under prefixes the fields of a decoding error with field.
func under(field string, err error) error {
	var pe *problemError
	var ves connections.ValidationErrors
	switch {
	case errors.As(err, &ves):
		out := make(connections.ValidationErrors, len(ves))
		for i, e := range ves {
			out[i] = &connections.ValidationError{Field: field + "." + e.Field, Reason: e.Reason}
		}
		return out
	case errors.As(err, &pe) && len(pe.errors) > 0:
		var out connections.ValidationErrors
		for _, e := range pe.errors {
			out = append(out, &connections.ValidationError{Field: field + "." + e.Field, Reason: e.Reason})
		}
		return out
	case errors.As(err, &pe):
		return connections.ValidationErrors{{Field: field, Reason: pe.detail}}
	}
	return err
}

func (s *Server) readDocument(i int, raw json.RawMessage) (connections.Document, error) {
	var d documentBody
	if err := decodeJSON(bytes.NewReader(raw), &d); err != nil {
		return connections.Document{}, err
	}
	var errs connections.ValidationErrors
	bad := func(field, format string, args ...any) {
		errs = append(errs, &connections.ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if d.APIVersion != manifest.APIVersion {
		bad("apiVersion", "must be %s", manifest.APIVersion)
	}
	if d.Kind != manifest.Kind {
		bad("kind", "unknown kind %q: the only kind is %s", d.Kind, manifest.Kind)
		return connections.Document{}, errs // the rest means nothing for another kind
	}
	if d.Metadata == nil || d.Metadata.Name == "" {
		bad("metadata.name", "is required")
	} else if err := connections.ValidateName(d.Metadata.Name); err != nil {
		bad("metadata.name", "%s", err.(*connections.ValidationError).Reason)
	}
	if len(d.Spec) == 0 || bytes.Equal(d.Spec, []byte("null")) {
		bad("spec", "is required: the connection's settings, as the API's create body without name")
	}
	if len(errs) > 0 {
		return connections.Document{}, errs
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(d.Spec, &keys); err != nil {
		return connections.Document{}, connections.ValidationErrors{{Field: "spec", Reason: "must be an object"}}
	}
	if _, ok := keys["name"]; ok {
		bad("spec.name", "is not part of spec: the name is metadata.name")
	}
	for _, f := range readOnlyFields {
		if _, ok := keys[f]; ok {
			bad("spec."+f, "is set by connmgr, not declared")
		}
	}
	if len(errs) > 0 {
		return connections.Document{}, errs
	}
	var body connectionBody
	if err := decodeJSON(bytes.NewReader(d.Spec), &body); err != nil {
		return connections.Document{}, under("spec", err)
	}
	conn, err := body.toConnection(d.Metadata.Name)
	if err != nil {
		return connections.Document{}, under("spec", err)
	}
	conn.Labels = d.Metadata.Labels
	if conn.Labels == nil {
		conn.Labels = map[string]string{}
	}
	doc := connections.Document{Connection: conn}
	errs = append(errs, refsOutsideSecrets(conn, d.Spec)...)
	errs = append(errs, s.openSecrets(conn)...)
	if d.Token != nil && d.Token.RefreshToken != "" {
		rt, err := s.openRefreshToken(conn, d.Token.RefreshToken)
		if err != nil {
			bad("token.refreshToken", "%s", err.Error())
		}
		doc.RefreshToken = rt
	}
	if len(errs) > 0 {
		return connections.Document{}, errs
	}
	return doc, nil
}

// openSecrets replaces each sealed secret of c with its value, checking
// that it was sealed for this connection, field and destinations. A
// reference the client should have resolved (${env:...}, ${file:...}) is
// an error: stored as it is, it would become the secret.
func (s *Server) openSecrets(c *connections.Connection) connections.ValidationErrors {
	var errs connections.ValidationErrors
	for _, r := range c.AllSecrets() {
		v := r.Value().Reveal()
		if !manifest.LooksLikeRef(v) {
			continue
		}
		field := "spec." + connections.SecretField(r.Path)
		ref, ok := manifest.ParseRef(v)
		if !ok || ref.Kind != "sealed" {
			what := "a reference"
			if ok {
				what = ref.String()
			}
			errs = append(errs, &connections.ValidationError{Field: field, Reason: what +
				" must be resolved by the client before it is sent (connmgr apply resolves ${env:NAME} and ${file:PATH}); the server opens only ${sealed:...}"})
			continue
		}
		value, err := s.unseal(v, c.Name, connections.SecretField(r.Path), c.Destinations(r.Dests))
		if err != nil {
			errs = append(errs, &connections.ValidationError{Field: field, Reason: err.Error()})
			continue
		}
		r.Set(value)
	}
	return errs
}

// refsOutsideSecrets reports the references in fields of spec that are
// not secrets of c: there a ${sealed:...} would be kept as text (a value
// moved out of its field, sent to the target as it is), and an
// ${env:...} or ${file:...} the client should have resolved too.
func refsOutsideSecrets(c *connections.Connection, spec json.RawMessage) connections.ValidationErrors {
	secret := map[string]bool{}
	for _, r := range c.AllSecrets() {
		secret["spec."+connections.SecretField(r.Path)] = true
	}
	var v any
	if json.Unmarshal(spec, &v) != nil {
		return nil
	}
	var errs connections.ValidationErrors
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(v)) {
				walk(path+"."+k, v[k])
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		case string:
			ref, ok := manifest.ParseRef(v)
			switch {
			case !ok || secret[path]:
			case ref.Kind == "sealed":
				errs = append(errs, &connections.ValidationError{Field: path, Reason: "holds a sealed value, but it is not a secret field: " +
					"sealed values are opened only in the secret fields they were sealed for"})
			default:
				errs = append(errs, &connections.ValidationError{Field: path, Reason: ref.String() +
					" must be resolved by the client before it is sent (connmgr apply resolves ${env:NAME} and ${file:PATH})"})
			}
		}
	}
	walk("spec", v)
	return errs
}

// refreshTokenDests are where a refresh token goes: the token endpoint.
var refreshTokenDests = []string{"tokenUrl", "issuer"}

func (s *Server) openRefreshToken(c *connections.Connection, v string) (connections.Secret, error) {
	if !keyring.IsSealed(v) {
		return connections.Secret{}, errors.New("must be sealed (${sealed:...}): a refresh token is imported only from an export made with sealTo")
	}
	return s.unseal(v, c.Name, "token.refreshToken", c.Destinations(refreshTokenDests))
}

// unseal opens a sealed value meant for field of connection name, to be
// sent to dests. Its errors say what is wrong and never hold the value.
func (s *Server) unseal(v, name, field string, dests []string) (connections.Secret, error) {
	id := s.transfer.Identity
	if id == nil {
		return connections.Secret{}, errors.New("is sealed, but this connmgr has no CONNMGR_IMPORT_IDENTITY to open it")
	}
	e, err := id.Open(v)
	switch {
	case errors.Is(err, keyring.ErrNotRecipient):
		return connections.Secret{}, fmt.Errorf("is sealed for another recipient than this connmgr (%s): export it again with sealTo set to that",
			strings.Join(id.Recipients(), ", "))
	case err != nil:
		return connections.Secret{}, errors.New("is not a valid sealed value")
	case e.Connection != name || e.Field != field:
		return connections.Secret{}, fmt.Errorf("was sealed for %s of %s, not for this field: a sealed value cannot be moved", e.Field, e.Connection)
	}
	for _, o := range dests {
		if !slices.Contains(e.Origins, o) {
			return connections.Secret{}, fmt.Errorf("was sealed to be sent to %s only, and this document sends it to %s: seal it again for this destination",
				orNowhere(e.Origins), o)
		}
	}
	return connections.NewSecret(e.Value), nil
}

func orNowhere(origins []string) string {
	if len(origins) == 0 {
		return "nowhere"
	}
	return strings.Join(origins, ", ")
}

// tokenSeeder stores imported refresh tokens in the token store.
type tokenSeeder struct {
	tokens  security.TokenStore
	manager *security.Manager
}

// SeedRefreshToken implements connections.TokenSeeder: the refresh token
// is stored with an access token that has already expired, under the
// connection's fingerprint, so that the first use (or the scheduler)
// refreshes.
func (t *tokenSeeder) SeedRefreshToken(ctx context.Context, c *connections.Connection, rt connections.Secret) error {
	st, err := t.tokens.Load(ctx, c.ID)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	tok := &security.Token{RefreshToken: rt, ObtainedAt: now, ExpiresAt: now}
	if _, err := t.tokens.Save(ctx, c.ID, c.Fingerprint, st.Version, tok, now, "", now); err != nil {
		return err
	}
	if t.manager != nil {
		t.manager.Forget(c.ID)
	}
	return nil
}

// routeTransfer installs the routes of connections as code: apply (on
// g, for keys with write, a route whose last segment holds a literal colon,
// escaped for gin), export (admin keys) and the documents' JSON Schema
// (public: editors fetch it).
func (s *Server) routeTransfer(r *gin.Engine, g *gin.RouterGroup, write gin.HandlerFunc) {
	g.POST(`/connections\:apply`, write, s.applyConnections)
	g.GET("/export", s.requireAdmin, s.exportConnections)
	r.GET("/schemas/connection.json", func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=300")
		c.Data(http.StatusOK, "application/schema+json", connmgr.ConnectionSchema)
	})
}

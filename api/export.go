package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"go.yaml.in/yaml/v3"

	"github.com/connmgr/connmgr/access"
	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/connections/manifest"
	"github.com/connmgr/connmgr/security/keyring"
)

var exportParams = []string{"role", "policy", "status", "q", "prefix", "selector", "sealTo", "includeRefreshTokens", "format"}

// specFields are the fields of a document's spec, in the order an export
// writes them.
var specFields = []string{"description", "keywords", "role", "baseUrl", "security", "tls", "headers", "forwardHeaders",
	"timeoutMs", "testRequest", "rateLimit", "maxConcurrent", "tokenRejectedStatuses"}

// requireAdmin lets only admin keys through: an export describes every
// connection, and with sealTo hands out its secrets to whoever holds the
// identity.
func (s *Server) requireAdmin(c *gin.Context) {
	if k := apiKey(c); k == nil || k.Role != access.RoleAdmin {
		s.renderProblem(c, newProblem(http.StatusForbidden, "forbidden", "only admin keys may export connections"))
		return
	}
	c.Next()
}

// parseSelector reads a label selector written key=value,key=value.
func parseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("selector %q: want key=value,key=value", s)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if errs := connections.CheckLabels("selector", out); len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// exportConnections serves GET /api/v1/export: every connection (or those
// the filters select) as documents that apply or import read back.
// Secrets become ${env:...} references with generated names, or with
// sealTo values sealed for that age recipient; tokens never leave, refresh
// tokens only sealed and when asked for.
func (s *Server) exportConnections(c *gin.Context) {
	q := c.Request.URL.Query()
	bad := func(detail string) { s.fail(c, newProblem(http.StatusBadRequest, "malformed_request", detail)) }
	f, err := connectionFilter(q, exportParams)
	if err != nil {
		s.fail(c, err)
		return
	}
	f.Limit = connections.MaxListLimit
	selector, err := parseSelector(q.Get("selector"))
	if err != nil {
		bad(err.Error())
		return
	}
	prefix := q.Get("prefix")
	format := q.Get("format")
	if format == "" {
		format = "yaml"
	}
	if format != "yaml" && format != "json" {
		bad("format must be yaml or json")
		return
	}
	var seal *keyring.Recipients
	if to := q.Get("sealTo"); to != "" {
		if seal, err = keyring.ParseRecipients(to); err != nil {
			bad("sealTo: " + err.Error())
			return
		}
	}
	withRefresh := false
	if v := q.Get("includeRefreshTokens"); v != "" {
		if withRefresh, err = strconv.ParseBool(v); err != nil {
			bad("includeRefreshTokens must be true or false")
			return
		}
	}
	if withRefresh && seal == nil {
		bad("includeRefreshTokens needs sealTo: a refresh token leaves connmgr only sealed for the target")
		return
	}
	if withRefresh && s.transfer.Tokens == nil {
		bad("this connmgr cannot export refresh tokens")
		return
	}
	ctx := c.Request.Context()
	var docs []*yaml.Node
	var vars []exportVar
	for {
		page, next, err := s.conns.List(ctx, f)
		if err != nil {
			s.fail(c, err)
			return
		}
		for _, conn := range page {
			if !strings.HasPrefix(conn.Name, prefix) || !connections.Matches(conn.Labels, selector) {
				continue
			}
			d, vs, err := s.exportDocument(c, conn, seal, withRefresh)
			if err != nil {
				s.fail(c, err)
				return
			}
			docs, vars = append(docs, d), append(vars, vs...)
		}
		if next == "" {
			break
		}
		f.After = next
	}
	c.Header("Cache-Control", "no-store")
	c.Header("Connmgr-Export-Count", strconv.Itoa(len(docs)))
	if format == "json" {
		var b bytes.Buffer
		b.WriteByte('[')
		for i, d := range docs {
			if i > 0 {
				b.WriteByte(',')
			}
			j, err := manifest.ToJSON(d)
			if err != nil {
				s.fail(c, err)
				return
			}
			b.Write(j)
		}
		b.WriteByte(']')
		c.Data(http.StatusOK, "application/json; charset=utf-8", b.Bytes())
		return
	}
	var b bytes.Buffer
	if err := manifest.Write(&b, exportHeader(len(docs), seal != nil, vars), docs); err != nil {
		s.fail(c, err)
		return
	}
	c.Data(http.StatusOK, "application/yaml; charset=utf-8", b.Bytes())
}

// exportVar is an environment variable an export refers to.
type exportVar struct{ name, connection, field string }

func exportHeader(n int, sealed bool, vars []exportVar) string {
	var h strings.Builder
	// No time stamp: exporting the same connections again gives the same
	// text, so that a file kept in git changes only when they do.
	fmt.Fprintf(&h, "connmgr export of %d connections.\n", n)
	h.WriteString("Apply with: connmgr apply -f FILE (or connmgr import -f FILE).\n")
	switch {
	case sealed:
		h.WriteString("Secrets are sealed for the target's CONNMGR_IMPORT_IDENTITY; tokens are not exported.\n")
	case len(vars) == 0:
		h.WriteString("No secrets; tokens are not exported.\n")
	default:
		h.WriteString("Secrets are not exported: set these variables before applying (tokens are not exported):\n")
		for _, v := range vars {
			fmt.Fprintf(&h, "  %s  (%s %s)\n", v.name, v.connection, v.field)
		}
	}
	return h.String()
}

// exportDocument is the document of conn: its spec as the create body
// without name, secrets replaced by references or sealed values.
func (s *Server) exportDocument(c *gin.Context, conn *connections.Connection, seal *keyring.Recipients, withRefresh bool) (*yaml.Node, []exportVar, error) {
	body, err := json.Marshal(connectionOut(conn, nil))
	if err != nil {
		return nil, nil, err
	}
	all, err := manifest.FromJSON(body)
	if err != nil {
		return nil, nil, err
	}
	spec := manifest.Mapping()
	for _, k := range specFields {
		v := manifest.Field(all, k)
		if v == nil || empty(v) || k == "description" && v.Value == "" {
			continue
		}
		manifest.Set(spec, k, v)
	}
	var vars []exportVar
	for _, r := range conn.AllSecrets() {
		if !r.Value().IsSet() {
			continue
		}
		field := connections.SecretField(r.Path)
		node := manifest.At(spec, field)
		if node == nil {
			continue // a secret the answer does not show
		}
		if seal != nil {
			sealed, err := seal.Seal(keyring.Envelope{Connection: conn.Name, Field: field,
				Origins: conn.Destinations(r.Dests), Value: r.Value().Reveal()})
			if err != nil {
				return nil, nil, err
			}
			*node = *manifest.String(sealed)
			continue
		}
		name := manifest.EnvName(conn.Name, r.Path)
		*node = *manifest.String("${env:" + name + "}")
		vars = append(vars, exportVar{name, conn.Name, "spec." + field})
	}
	meta := manifest.Mapping("name", conn.Name)
	if len(conn.Labels) > 0 {
		labels := manifest.Mapping()
		for _, k := range sortedKeys(conn.Labels) {
			manifest.Set(labels, k, manifest.String(conn.Labels[k]))
		}
		manifest.Set(meta, "labels", labels)
	}
	doc := manifest.Mapping("apiVersion", manifest.APIVersion, "kind", manifest.Kind, "metadata", meta, "spec", spec)
	if withRefresh {
		if rt, err := s.storedRefreshToken(c, conn); err != nil {
			return nil, nil, err
		} else if rt.IsSet() {
			sealed, err := seal.Seal(keyring.Envelope{Connection: conn.Name, Field: "token.refreshToken",
				Origins: conn.Destinations(refreshTokenDests), Value: rt.Reveal()})
			if err != nil {
				return nil, nil, err
			}
			manifest.Set(doc, "token", manifest.Mapping("refreshToken", manifest.String(sealed)))
		}
	}
	doc.HeadComment = conn.Name
	return doc, vars, nil
}

// storedRefreshToken returns conn's stored refresh token when it belongs to the
// connection's current configuration; nothing for other policies.
func (s *Server) storedRefreshToken(c *gin.Context, conn *connections.Connection) (connections.Secret, error) {
	if _, ok := conn.Security.(connections.ConsentPolicy); !ok {
		return connections.Secret{}, nil
	}
	st, err := s.transfer.Tokens.Load(c.Request.Context(), conn.ID)
	if err != nil || st.Token == nil || st.Fingerprint != conn.Fingerprint {
		return connections.Secret{}, err
	}
	return st.Token.RefreshToken, nil
}

func empty(n *yaml.Node) bool {
	return (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && len(n.Content) == 0 || n.Tag == "!!null"
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

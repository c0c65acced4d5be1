package security

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestDiscoverIssuerWithPath: an issuer with a path publishes its RFC 8414
// metadata at /.well-known/oauth-authorization-server inserted before the
// path (§3.1), not appended to it; an OpenID provider's document is
// appended to the issuer.
func TestDiscoverIssuerWithPath(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	serve := func(path, issuer string) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(Metadata{Issuer: issuer, TokenEndpoint: issuer + "/token"})
		})
	}
	serve("GET /.well-known/oauth-authorization-server/tenants/a", srv.URL+"/tenants/a")
	serve("GET /tenants/b/.well-known/openid-configuration", srv.URL+"/tenants/b")
	serve("GET /.well-known/oauth-authorization-server", srv.URL)
	for _, issuer := range []string{srv.URL + "/tenants/a", srv.URL + "/tenants/b", srv.URL} {
		md, err := discover(t.Context(), srv.Client(), issuer)
		if err != nil || md.TokenEndpoint != issuer+"/token" {
			t.Errorf("discover(%s) = %+v, %v; want its metadata", issuer, md, err)
		}
	}
	if md, err := discover(t.Context(), srv.Client(), srv.URL+"/tenants/c"); err == nil {
		t.Errorf("discover(an issuer with no metadata) = %+v, want an error", md)
	}
}

package security_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connmgr/connmgr/connections"
	"github.com/connmgr/connmgr/security"
	"github.com/connmgr/connmgr/store"
	"github.com/connmgr/connmgr/store/storetest"
)

// tokenErr returns the *TokenError in err, failing the test without one.
func tokenErr(t *testing.T, err error) *security.TokenError {
	t.Helper()
	var te *security.TokenError
	if !errors.As(err, &te) {
		t.Fatalf("error %v has no *security.TokenError", err)
	}
	return te
}

// byClient keys token requests by client id.
func byClient(r tokenRequest) string { return r.Client }

func TestTokenSingleFlight(t *testing.T) {
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		// A slow endpoint keeps the request open while callers pile up.
		ts.script(func(s *tokenServer) { s.delay = 200 * time.Millisecond })
		ctx := context.Background()

		wave := func(t *testing.T, m *security.Manager, c *connections.Connection, n int) []string {
			var wg sync.WaitGroup
			start := make(chan struct{})
			got := make([]string, n)
			for i := range n {
				wg.Go(func() {
					<-start
					tok, err := m.Token(ctx, c)
					if e.record(err) != nil {
						t.Errorf("Token() error = %v", err)
						return
					}
					got[i] = tok.AccessToken.Reveal()
				})
			}
			close(start)
			wg.Wait()
			return got
		}
		same := func(t *testing.T, toks []string) {
			t.Helper()
			for i, tok := range toks {
				if tok != toks[0] || tok == "" {
					t.Fatalf("caller %d got token %q, caller 0 got %q: want one token for all", i, tok, toks[0])
				}
			}
		}

		c := e.create(clientCredentials("Conn_Cold", ts.URL(), "cold"))
		same(t, wave(t, e.m, c, 200))
		if got := ts.count(); got != 1 {
			t.Fatalf("Token() requests = %d, want 1 for 200 concurrent callers on a cold cache", got)
		}
		hits, misses := e.cacheCount("hit"), e.cacheCount("miss")
		if misses < 1 {
			t.Errorf("cache misses = %v, want at least 1 for the cold wave", misses)
		}
		same(t, wave(t, e.m, c, 200))
		if got := ts.count(); got != 1 {
			t.Errorf("Token() requests after a warm wave = %d, want 1 (cache hits)", got)
		}
		if got := e.cacheCount("hit") - hits; got != 200 {
			t.Errorf("connmgr_token_cache_total{result=\"hit\"} grew by %v, want 200", got)
		}
		if got := e.cacheCount("miss") - misses; got != 0 {
			t.Errorf("connmgr_token_cache_total{result=\"miss\"} grew by %v in the warm wave, want 0", got)
		}

		t.Run("three processes", func(t *testing.T) {
			e := e.at(t)
			c := e.create(clientCredentials("Conn_Cold_Replicas", ts.URL(), "cold-replicas"))
			procs := []*security.Manager{e.m, e.replica(), e.replica()}
			var mu sync.Mutex
			var all []string
			var wg sync.WaitGroup
			for _, m := range procs {
				wg.Go(func() {
					toks := wave(t, m, c, 70)
					mu.Lock()
					all = append(all, toks...)
					mu.Unlock()
				})
			}
			wg.Wait()
			same(t, all)
			if got := ts.countBy(byClient)["cold-replicas"]; got != 1 {
				t.Errorf("token requests = %d, want 1 for 3 processes x 70 callers on a cold cache", got)
			}
		})
	})
}

func TestTokenReusedAfterRestart(t *testing.T) {
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		cc := e.create(clientCredentials("Conn_Restart_CC", ts.URL(), "restart-cc"))
		ac := e.create(authorizationCode("Conn_Restart_AC", ts.srv.URL+"/authorize", ts.URL(), "restart-ac", canary+"-ac-secret"))
		e.seed(ac, canary+"-seeded-access", ts.newFamily("restart-ac"), e.clock.Now().Add(-time.Hour), 30*time.Minute)

		first := map[string]*security.Token{}
		for _, c := range []*connections.Connection{cc, ac} {
			tok, err := e.m.Token(ctx, c)
			if e.record(err) != nil {
				t.Fatalf("Token(%s): %v", c.Name, err)
			}
			first[c.Name] = tok
		}
		if got := ts.count(); got != 2 {
			t.Fatalf("token requests = %d, want 2 (one per connection)", got)
		}
		e.clock.Advance(10 * time.Minute)

		m2 := e.restarted()
		for _, c := range []*connections.Connection{cc, ac} {
			tok, err := m2.Token(ctx, c)
			if e.record(err) != nil {
				t.Fatalf("restarted Token(%s): %v", c.Name, err)
			}
			if !tok.AccessToken.Equal(first[c.Name].AccessToken) || !tok.ExpiresAt.Equal(first[c.Name].ExpiresAt) {
				t.Errorf("restarted Token(%s) = a token expiring %v, want the persisted one expiring %v",
					c.Name, tok.ExpiresAt, first[c.Name].ExpiresAt)
			}
		}
		if got := ts.count(); got != 2 {
			t.Errorf("token requests after restart = %d, want 2 (0 new)", got)
		}

		// The database holds ciphertext only.
		plain := []string{first[cc.Name].AccessToken.Reveal(), first[ac.Name].AccessToken.Reveal(),
			first[ac.Name].RefreshToken.Reveal()}
		if plain[2] == "" {
			t.Fatalf("the rotated refresh token was not kept")
		}
		for _, row := range storetest.TableText(t, e.db.DB, "tokens") {
			for _, p := range plain {
				if strings.Contains(row, p) {
					t.Errorf("tokens table holds the plaintext %q", p)
				}
			}
			if strings.Contains(row, canary) {
				t.Errorf("tokens table holds a plaintext secret: %.80q", row)
			}
		}
		var ct struct{ AccessToken, RefreshToken []byte }
		if err := e.db.Raw("SELECT access_token, refresh_token FROM tokens WHERE connection_id = ?", ac.ID).
			Scan(&ct).Error; err != nil {
			t.Fatal(err)
		}
		if pt, err := e.ring.Open(ct.AccessToken, store.TokenAD(ac.ID, "access")); err != nil || string(pt) != plain[1] {
			t.Errorf("stored access token does not decrypt to the token: %v", err)
		}
		if _, err := e.ring.Open(ct.RefreshToken, store.TokenAD(cc.ID, "refresh")); err == nil {
			t.Errorf("a refresh token ciphertext decrypts for another connection")
		}
	})
}

// TestRefreshAcrossReplicas runs three connmgr processes on one database,
// each running the scheduled refresh at the same time, over several token
// lifetimes.
func TestRefreshAcrossReplicas(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		// Short lifetimes keep the scheduler's jitter short.
		const lifetime = 10 * time.Second
		ts.script(func(s *tokenServer) { s.expiresIn = int(lifetime.Seconds()) })
		procs := []*security.Manager{e.m, e.replica(), e.replica()}

		var conns []*connections.Connection
		refresh := map[string]string{} // by client id: the seeded refresh token
		nearExpiry := e.clock.Now().Add(-lifetime + 2*time.Second)
		for i := range 3 {
			id := fmt.Sprintf("cc-%d", i)
			c := e.create(clientCredentials(fmt.Sprintf("Conn_Replica_CC_%d", i), ts.URL(), id))
			e.seed(c, canary+"-seeded-"+id, "", nearExpiry, lifetime)
			conns = append(conns, c)
		}
		for i := range 3 {
			id := fmt.Sprintf("ac-%d", i)
			c := e.create(authorizationCode(fmt.Sprintf("Conn_Replica_AC_%d", i), ts.srv.URL+"/authorize", ts.URL(), id, canary+"-secret-"+id))
			refresh[id] = ts.newFamily(id)
			e.seed(c, canary+"-seeded-"+id, refresh[id], nearExpiry, lifetime)
			conns = append(conns, c)
		}

		const cycles = 4
		for cycle := range cycles {
			versions := map[int64]int64{}
			for _, c := range conns {
				versions[c.ID] = e.stored(c).Version
			}
			before := ts.count()
			var wg sync.WaitGroup
			for _, m := range procs {
				wg.Go(func() { refreshDue(m) })
			}
			wg.Wait()

			perClient := map[string]int{}
			for _, r := range ts.log()[before:] {
				perClient[r.Client]++
			}
			for _, c := range conns {
				id := oauthClient(c).ClientID
				if got := perClient[id]; got != 1 {
					t.Errorf("cycle %d: token requests for %s = %d, want exactly 1", cycle, c.Name, got)
				}
				st := e.stored(c)
				if st.Version != versions[c.ID]+1 {
					t.Errorf("cycle %d: %s token version = %d, want %d", cycle, c.Name, st.Version, versions[c.ID]+1)
				}
				if st.LeaseOwner != "" {
					t.Errorf("cycle %d: %s lease still held by %q", cycle, c.Name, st.LeaseOwner)
				}
				if rt, ok := refresh[id]; ok {
					cur, alive := ts.current(rt)
					if !alive || !st.Token.RefreshToken.Equal(connections.NewSecret(cur)) {
						t.Errorf("cycle %d: %s stored refresh token is not the endpoint's current one (family alive: %v)", cycle, c.Name, alive)
					}
				}
			}
			if got := ts.errors("invalid_grant"); got != 0 {
				t.Fatalf("cycle %d: the rotating endpoint answered invalid_grant %d times (reused refresh tokens: %d), want 0",
					cycle, got, ts.reused())
			}
			// Move past the new tokens' jittered refresh point (at most 3/4 of
			// the lifetime), before their expiry.
			e.clock.Advance(lifetime * 8 / 10)
		}
		if got, want := ts.count(), cycles*len(conns); got != want {
			t.Errorf("token requests = %d, want %d (%d connections x %d cycles)", got, want, len(conns), cycles)
		}
		for _, c := range conns {
			if got := e.get(c.Name).Status; got != connections.StatusConfigured {
				t.Errorf("%s status = %s, want CONFIGURED", c.Name, got)
			}
		}
	})
}

// TestProviderDown keeps the token endpoint failing for five minutes of
// the test clock: first 503, then 429 with Retry-After.
func TestProviderDown(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ts.script(func(s *tokenServer) { s.expiresIn = 120 })
		ctx := context.Background()
		c := e.create(clientCredentials("Conn_Provider_Down", ts.URL(), "down"))
		first, err := e.m.Token(ctx, c)
		if e.record(err) != nil {
			t.Fatalf("Token: %v", err)
		}
		start := e.clock.Now()
		ts.failWith(http.StatusServiceUnavailable, "", "")

		const (
			step       = 5 * time.Second
			outage     = 5 * time.Minute
			retryAfter = 200 * time.Second
			switchAt   = 150 * time.Second // from 503 to 429
		)
		cycles := 0
		for elapsed := time.Duration(0); elapsed < outage; elapsed += step {
			if elapsed == switchAt {
				ts.failWith(http.StatusTooManyRequests, "", fmt.Sprint(int(retryAfter.Seconds())))
			}
			cycles++
			refreshDue(e.m)
			now := e.clock.Now()
			before := ts.count()
			if first.Valid(now) {
				tok, err := e.m.Token(ctx, c)
				if e.record(err) != nil {
					t.Fatalf("at +%v Token() error = %v, want the cached token while it is valid", elapsed, err)
				}
				if !tok.AccessToken.Equal(first.AccessToken) {
					t.Fatalf("at +%v Token() returned another token", elapsed)
				}
			} else {
				for range 20 {
					_, err := e.m.Token(ctx, c)
					e.record(err)
					if !errors.Is(err, security.ErrTokenUnavailable) {
						t.Fatalf("at +%v with the token expired, Token() error = %v, want ErrTokenUnavailable", elapsed, err)
					}
					if te := tokenErr(t, err); te.Permanent {
						t.Fatalf("at +%v Token() error is permanent: %v", elapsed, te)
					}
				}
			}
			if got := ts.count() - before; got != 0 {
				t.Fatalf("at +%v Token() made %d token requests during the backoff, want 0", elapsed, got)
			}
			if ts.count() > 1 {
				if got := e.get(c.Name).Status; got != connections.StatusError {
					t.Errorf("at +%v status = %s, want ERROR", elapsed, got)
				}
			}
			e.clock.Advance(step)
		}

		attempts := ts.log()[1:]
		t.Logf("%d attempts in %d cycles over %v", len(attempts), cycles, outage)
		if len(attempts) < 4 || len(attempts) > 12 {
			t.Errorf("refresh attempts during the outage = %d in %d cycles, want 4..12 (exponential backoff)", len(attempts), cycles)
		}
		for i := 1; i < len(attempts); i++ {
			gap := attempts[i].At.Sub(attempts[i-1].At)
			// After the nth failure the wait is at least half of 2^(n-1)s
			// (at most 5 minutes).
			if least := min(time.Second<<min(i-1, 9), 5*time.Minute) / 2; gap < least {
				t.Errorf("attempt %d came %v after the one before, want at least %v", i+1, gap, least)
			}
		}

		ts.recover()
		var recovered time.Time
		for range 2 * int(retryAfter/step) {
			refreshDue(e.m)
			if ts.count() > 1+len(attempts) {
				recovered = e.clock.Now()
				break
			}
			e.clock.Advance(step)
		}
		if recovered.IsZero() {
			t.Fatalf("no attempt within %v of the recovery", 2*retryAfter)
		}
		all := ts.log()
		saw429 := false
		for i, r := range all[:len(all)-1] {
			if r.Status == http.StatusTooManyRequests {
				saw429 = true
				if next := all[i+1].At; next.Before(r.At.Add(retryAfter)) {
					t.Errorf("attempt at +%v came %v after a 429 with Retry-After %v",
						next.Sub(start), next.Sub(r.At), retryAfter)
				}
			}
		}
		if !saw429 {
			t.Errorf("no attempt met the 429 phase; the test did not check Retry-After")
		}
		if last := all[len(all)-1]; last.Status != http.StatusOK || ts.count() != 2+len(attempts) {
			t.Errorf("first attempt after recovery answered %d (%d requests), want one successful request", last.Status, ts.count()-1-len(attempts))
		}
		if got := e.get(c.Name).Status; got != connections.StatusConfigured {
			t.Errorf("status after recovery = %s, want CONFIGURED", got)
		}
		tok, err := e.m.Token(ctx, c)
		if e.record(err) != nil || tok.AccessToken.Equal(first.AccessToken) {
			t.Fatalf("Token() after recovery = %v, want the new token", err)
		}
		info, err := e.m.Info(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if info.Failures != 0 || info.LastError != "" || !info.NextAttempt.IsZero() {
			t.Errorf("Info() after recovery = failures %d, last error %q, next attempt %v; want all cleared",
				info.Failures, info.LastError, info.NextAttempt)
		}
	})
}

// TestColdProviderDown: a connection that never had a token backs off
// exponentially too while its token endpoint fails, also when callers
// keep asking.
func TestColdProviderDown(t *testing.T) {
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		c := e.create(clientCredentials("Conn_Cold_Down", ts.URL(), "cold-down"))
		ts.failWith(http.StatusServiceUnavailable, "", "")
		var waits []time.Duration
		for n := 1; n <= 6; n++ {
			_, err := e.m.Token(ctx, c)
			if !errors.Is(e.record(err), security.ErrTokenUnavailable) {
				t.Fatalf("Token() = %v, want ErrTokenUnavailable", err)
			}
			info, err := e.m.Info(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if info.Failures != n {
				t.Errorf("Info().Failures after %d failed requests = %d, want %d", n, info.Failures, n)
			}
			waits = append(waits, info.NextAttempt.Sub(e.clock.Now()))
			e.clock.Advance(info.NextAttempt.Sub(e.clock.Now()))
		}
		// After the nth failure the wait is at least half of 2^(n-1)s.
		for i, w := range waits {
			if least := (time.Second << i) / 2; w < least {
				t.Errorf("wait after failure %d = %v, want at least %v", i+1, w, least)
			}
		}
		if got := ts.count(); got != 6 {
			t.Errorf("token requests = %d, want 6 (one per attempt)", got)
		}
	})
}

func TestFailureClasses(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		ctx := context.Background()

		t.Run("invalid_client is permanent", func(t *testing.T) {
			e := newTokenEnv(t, engine)
			ts := newTokenServer(t, e.clock.Now)
			c := clientCredentials("Conn_Invalid_Client", ts.URL(), "bad-client")
			oauthClient(c).ClientAuth = security.ClientAuthBody // the body echoes the secret
			c = e.create(c)
			e.seed(c, canary+"-seeded", "", e.clock.Now().Add(-55*time.Minute), time.Hour)
			ts.failWith(http.StatusUnauthorized, "invalid_client", "")

			refreshDue(e.m)
			if got := ts.count(); got != 1 {
				t.Fatalf("token requests = %d, want 1", got)
			}
			if got := e.get(c.Name).Status; got != connections.StatusError {
				t.Errorf("status = %s, want ERROR", got)
			}
			info, _ := e.m.Info(ctx, c)
			if !info.Blocked || info.Refreshable {
				t.Errorf("Info() blocked = %v, refreshable = %v; want blocked, not refreshable", info.Blocked, info.Refreshable)
			}
			// The valid token keeps serving; nothing is retried.
			if _, err := e.m.Token(ctx, c); e.record(err) != nil {
				t.Errorf("Token() with a valid token = %v, want it", err)
			}
			for range 5 {
				e.clock.Advance(5 * time.Minute)
				refreshDue(e.m)
			}
			_, err := e.m.Token(ctx, c)
			e.record(err)
			if !errors.Is(err, security.ErrTokenUnavailable) {
				t.Fatalf("Token() after expiry = %v, want ErrTokenUnavailable", err)
			}
			te := tokenErr(t, err)
			if !te.Permanent || !strings.Contains(te.Reason, "invalid_client") {
				t.Errorf("security.TokenError = %+v, want permanent with reason invalid_client", te)
			}
			if got := ts.count(); got != 1 {
				t.Errorf("token requests after a permanent failure = %d, want 1 (no automatic retries)", got)
			}
			// A refresh asked for by hand still tries.
			_, err = e.m.Refresh(ctx, c)
			e.record(err)
			if got := ts.count(); got != 2 || err == nil {
				t.Errorf("forced Refresh() = %v with %d requests, want a failed attempt (2 requests)", err, got)
			}
			checkReason(t, te, c)
		})

		t.Run("invalid_grant on refresh needs consent", func(t *testing.T) {
			e := newTokenEnv(t, engine)
			ts := newTokenServer(t, e.clock.Now)
			c := e.create(authorizationCode("Conn_Invalid_Grant", ts.srv.URL+"/authorize", ts.URL(), "revoked", canary+"-secret-revoked"))
			rt := ts.newFamily("revoked")
			e.seed(c, canary+"-seeded", rt, e.clock.Now().Add(-55*time.Minute), time.Hour)
			if err := e.svc.SetStatus(ctx, c, connections.StatusConfigured, "", nil); err != nil {
				t.Fatal(err)
			}
			stale := e.get(c.Name) // CONFIGURED, as a cache might still hold it
			ts.script(func(s *tokenServer) { s.families[rt].revoked = true })

			refreshDue(e.m)
			if got := ts.count(); got != 1 {
				t.Fatalf("token requests = %d, want 1", got)
			}
			if got := e.get(c.Name).Status; got != connections.StatusNeedsConsent {
				t.Errorf("status = %s, want NEEDS_CONSENT", got)
			}
			e.clock.Advance(10 * time.Minute) // expired
			for range 3 {
				refreshDue(e.m)
			}
			for _, conn := range []*connections.Connection{e.get(c.Name), stale} {
				_, err := e.m.Token(ctx, conn)
				e.record(err)
				if !errors.Is(err, security.ErrNeedsConsent) {
					t.Errorf("Token() (connection status %s) = %v, want ErrNeedsConsent", conn.Status, err)
				}
			}
			if got := ts.count(); got != 1 {
				t.Errorf("token requests = %d, want 1 (none after invalid_grant)", got)
			}
			_, err := e.m.Refresh(ctx, c)
			e.record(err)
			if got := ts.count(); got != 2 {
				t.Errorf("forced Refresh() made %d requests in all, want 2", got)
			}
			if !errors.Is(err, security.ErrNeedsConsent) {
				t.Errorf("forced Refresh() = %v, want ErrNeedsConsent", err)
			}
			checkReason(t, tokenErr(t, err), c)
		})

		transient := []struct {
			name       string
			setup      func(ts *tokenServer)
			reason     string
			retryAfter time.Duration
			timeout    time.Duration // of the security.Manager's client
		}{
			{name: "timeout", setup: func(ts *tokenServer) { ts.script(func(s *tokenServer) { s.delay = 2 * time.Second }) },
				reason: "timeout", timeout: 300 * time.Millisecond},
			{name: "503", setup: func(ts *tokenServer) { ts.failWith(http.StatusServiceUnavailable, "", "") }, reason: "HTTP 503"},
			{name: "500 with an OAuth error", setup: func(ts *tokenServer) { ts.failWith(http.StatusInternalServerError, "server_error", "") }, reason: "server_error"},
			{name: "429 with Retry-After", setup: func(ts *tokenServer) { ts.failWith(http.StatusTooManyRequests, "", "30") }, reason: "HTTP 429", retryAfter: 30 * time.Second},
			{name: "429 with an HTTP-date Retry-After", setup: func(ts *tokenServer) {
				ts.failWith(http.StatusTooManyRequests, "", ts.now().Add(45*time.Second).Format(http.TimeFormat))
			}, reason: "HTTP 429", retryAfter: 45 * time.Second},
			{name: "429 with a day-long Retry-After", setup: func(ts *tokenServer) { ts.failWith(http.StatusTooManyRequests, "", "86400") }, reason: "HTTP 429", retryAfter: time.Hour},
			{name: "400 temporarily_unavailable", setup: func(ts *tokenServer) { ts.failWith(http.StatusBadRequest, "temporarily_unavailable", "") }, reason: "temporarily_unavailable"},
			{name: "connection refused", setup: func(ts *tokenServer) { ts.srv.Close() }, reason: "refused"},
		}
		for _, tt := range transient {
			t.Run(tt.name+" is transient", func(t *testing.T) {
				timeout := cmp.Or(tt.timeout, 5*time.Second)
				e := newTokenEnv(t, engine, withClient(loopbackClient(t, timeout)))
				ts := newTokenServer(t, e.clock.Now)
				c := e.create(clientCredentials("Conn_Transient", ts.URL(), "transient"))
				tt.setup(ts)
				_, err := e.m.Token(ctx, c)
				e.record(err)
				if !errors.Is(err, security.ErrTokenUnavailable) {
					t.Fatalf("Token() = %v, want ErrTokenUnavailable", err)
				}
				te := tokenErr(t, err)
				if te.Permanent || !strings.Contains(te.Reason, tt.reason) {
					t.Errorf("security.TokenError = %+v, want transient with reason containing %q", te, tt.reason)
				}
				if te.RetryAfter != tt.retryAfter {
					t.Errorf("security.TokenError.RetryAfter = %v, want %v", te.RetryAfter, tt.retryAfter)
				}
				checkReason(t, te, c)
				if got := e.get(c.Name).Status; got != connections.StatusError {
					t.Errorf("status = %s, want ERROR", got)
				}
				info, err := e.m.Info(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				wantNext := e.clock.Now().Add(max(tt.retryAfter, 500*time.Millisecond))
				if info.Blocked || info.NextAttempt.Before(wantNext) {
					t.Errorf("Info() blocked = %v, next attempt +%v; want not blocked, a later attempt (at least +%v)",
						info.Blocked, info.NextAttempt.Sub(e.clock.Now()), wantNext.Sub(e.clock.Now()))
				}
			})
		}
	})
}

// checkReason fails if a TokenError's reason holds a secret of c or a
// response body that is not an OAuth error's description.
func checkReason(t *testing.T, te *security.TokenError, c *connections.Connection) {
	t.Helper()
	for _, s := range []string{canary, "BODY", oauthClient(c).ClientSecret.Reveal()} {
		if s != "" && strings.Contains(te.Reason+te.Error(), s) {
			t.Errorf("security.TokenError %q contains %q", te.Error(), s)
		}
	}
}

// TestExpiresIn: a token lives for expires_in when the endpoint gives a
// usable one; without, until the exp of its access token when that is a
// JWT, signed or not (#9 item 5), else DefaultTTL; at most a day.
func TestExpiresIn(t *testing.T) {
	const defaultTTL = 45 * time.Minute
	hmacKey := []byte(canary + "-jwt-signing-key")
	tests := []struct {
		name      string
		expiresIn any
		form      bool // form-encoded response
		// access makes the access token at now (nil: the endpoint's own
		// opaque one).
		access func(t *testing.T, now time.Time) string
		want   time.Duration
	}{
		{name: "3600", expiresIn: 3600, want: time.Hour},
		{name: "missing", expiresIn: omitExpiresIn, want: defaultTTL},
		{name: "zero", expiresIn: 0, want: defaultTTL},
		{name: "negative", expiresIn: -60, want: defaultTTL},
		{name: "null", expiresIn: nil, want: defaultTTL},
		{name: "not a number", expiresIn: "abc", want: defaultTTL},
		{name: "a boolean", expiresIn: true, want: defaultTTL},
		{name: "numeric string", expiresIn: "3600", want: time.Hour},
		{name: "fraction", expiresIn: 3600.7, want: time.Hour},
		{name: "exponent", expiresIn: json.RawMessage("3.6e3"), want: time.Hour},
		{name: "huge", expiresIn: json.RawMessage("1e12"), want: 24 * time.Hour},
		{name: "beyond int64", expiresIn: json.RawMessage("1e300"), want: 24 * time.Hour},
		{name: "two days", expiresIn: 172800, want: 24 * time.Hour},
		{name: "short", expiresIn: 40, want: 40 * time.Second},
		{name: "one second", expiresIn: 1, want: time.Second},
		{name: "form-encoded", expiresIn: 40, form: true, want: 40 * time.Second},
		{name: "form-encoded, missing", expiresIn: omitExpiresIn, form: true, want: defaultTTL},
		{name: "form-encoded, not a number", expiresIn: "abc", form: true, want: defaultTTL},
		{name: "unsigned JWT with exp", expiresIn: omitExpiresIn, want: 30 * time.Minute,
			access: func(t *testing.T, now time.Time) string {
				return jwtToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"exp": now.Add(30 * time.Minute).Unix()})
			}},
		{name: "signed JWT with exp", expiresIn: omitExpiresIn, want: 20 * time.Minute,
			access: func(t *testing.T, now time.Time) string {
				return jwtToken(t, jwt.SigningMethodHS256, hmacKey, jwt.MapClaims{"exp": now.Add(20 * time.Minute).Unix(), "sub": "svc"})
			}},
		{name: "expires_in zero, JWT exp", expiresIn: 0, want: 20 * time.Minute,
			access: func(t *testing.T, now time.Time) string {
				return jwtToken(t, jwt.SigningMethodHS256, hmacKey, jwt.MapClaims{"exp": now.Add(20 * time.Minute).Unix()})
			}},
		{name: "expires_in wins over exp", expiresIn: 3600, want: time.Hour,
			access: func(t *testing.T, now time.Time) string {
				return jwtToken(t, jwt.SigningMethodHS256, hmacKey, jwt.MapClaims{"exp": now.Add(10 * time.Minute).Unix()})
			}},
		{name: "JWT exp beyond a day", expiresIn: omitExpiresIn, want: 24 * time.Hour,
			access: func(t *testing.T, now time.Time) string {
				return jwtToken(t, jwt.SigningMethodHS256, hmacKey, jwt.MapClaims{"exp": now.Add(72 * time.Hour).Unix()})
			}},
		{name: "JWT without exp", expiresIn: omitExpiresIn, want: defaultTTL,
			access: func(t *testing.T, now time.Time) string {
				return jwtToken(t, jwt.SigningMethodHS256, hmacKey, jwt.MapClaims{"sub": "svc"})
			}},
		{name: "opaque token", expiresIn: omitExpiresIn, want: defaultTTL},
		{name: "dotted, not a JWT", expiresIn: omitExpiresIn, want: defaultTTL,
			access: func(*testing.T, time.Time) string { return canary + ".not.a-jwt" }},
	}
	forTokenEnvs(t, func(cfg *security.ManagerConfig) { cfg.DefaultTTL = defaultTTL }, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				var access func(int) string
				if tt.access != nil {
					tok := tt.access(t, e.clock.Now())
					e.secret(tok)
					access = func(int) string { return tok }
				}
				ts.script(func(s *tokenServer) { s.expiresIn, s.formBody, s.access = tt.expiresIn, tt.form, access })
				c := e.create(clientCredentials(fmt.Sprintf("Conn_Expires_%d", i), ts.URL(), fmt.Sprintf("expires-%d", i)))
				tok, err := e.m.Token(context.Background(), c)
				if e.record(err) != nil {
					t.Fatalf("Token() error = %v", err)
				}
				if got := tok.Lifetime(); got != tt.want {
					t.Errorf("expires_in %v: lifetime = %v, want %v", tt.expiresIn, got, tt.want)
				}
				if got := e.stored(c).Token.Lifetime(); got != tt.want {
					t.Errorf("expires_in %v: stored lifetime = %v, want %v", tt.expiresIn, got, tt.want)
				}
			})
		}
	})
}

func TestRefreshAt(t *testing.T) {
	obtained := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		lifetime, ahead time.Duration
	}{
		{time.Hour, 12 * time.Minute},
		{24 * time.Hour, 288 * time.Minute},
		{10 * time.Minute, 2 * time.Minute},
		{5 * time.Minute, time.Minute},
		{2 * time.Minute, time.Minute},
		{90 * time.Second, 45 * time.Second},
		{3 * time.Minute, time.Minute},
		{40 * time.Second, 20 * time.Second},
		{10 * time.Second, 5 * time.Second},
		{time.Second, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.lifetime.String(), func(t *testing.T) {
			tok := &security.Token{ObtainedAt: obtained, ExpiresAt: obtained.Add(tt.lifetime)}
			if got, want := tok.RefreshAt(), obtained.Add(tt.lifetime-tt.ahead); !got.Equal(want) {
				t.Errorf("RefreshAt() of a %v token = expiry - %v, want expiry - %v", tt.lifetime, tok.ExpiresAt.Sub(got), tt.ahead)
			}
			// Due for refresh while still valid.
			tok.AccessToken = connections.NewSecret("x")
			if !tok.Valid(tok.RefreshAt()) {
				t.Errorf("a %v token is not valid at its refresh time", tt.lifetime)
			}
		})
	}
}

func TestRejected(t *testing.T) {
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		c := e.create(clientCredentials("Conn_Rejected", ts.URL(), "rejected"))

		tok1, err := e.m.Token(ctx, c)
		if e.record(err) != nil {
			t.Fatal(err)
		}
		if !e.m.Rejected(ctx, c, tok1) { // the target answered 401
			t.Fatalf("Rejected() of a valid token = false, want true (retry with a new token)")
		}
		tok2, err := e.m.Token(ctx, c)
		if e.record(err) != nil {
			t.Fatal(err)
		}
		if got := ts.count(); got != 2 || tok2.AccessToken.Equal(tok1.AccessToken) {
			t.Fatalf("after Rejected, Token() made %d requests in all (same token: %v), want 2 and a new token",
				got, tok2.AccessToken.Equal(tok1.AccessToken))
		}

		// A late 401 for an older token must not drop a newer one, here
		// obtained by another process (after the cool-down of the first
		// rejection: see TestRejectedCooldown).
		e.clock.Advance(11 * time.Second)
		other := e.replica()
		tok3, err := other.Refresh(ctx, c)
		if e.record(err) != nil {
			t.Fatal(err)
		}
		for name, retry := range map[string]bool{"this process, its own older token": e.m.Rejected(ctx, c, tok2),
			"the other process, an older token": other.Rejected(ctx, c, tok1)} {
			if !retry {
				t.Errorf("%s: Rejected() = false, want true (a newer token is there)", name)
			}
		}
		for name, m := range map[string]*security.Manager{"this process": e.m, "the other process": other} {
			got, err := m.Token(ctx, c)
			if e.record(err) != nil {
				t.Fatal(err)
			}
			if !got.AccessToken.Equal(tok3.AccessToken) {
				t.Errorf("%s: Token() after a stale Rejected = another token, want the newer one", name)
			}
		}
		if got := ts.count(); got != 3 {
			t.Errorf("token requests = %d, want 3 (the stale rejections cost none)", got)
		}
	})
}

// TestRejectedCooldown: a target that rejects every token cannot make
// connmgr ask the token endpoint more than once per connection per
// cool-down (#8 item 9).
func TestRejectedCooldown(t *testing.T) {
	const cooldown = 30 * time.Second
	forTokenEnvs(t, func(cfg *security.ManagerConfig) { cfg.RejectCooldown = cooldown }, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		// invoke plays the proxy on a target that answers 401: it reports
		// the token and retries once with a new one when Rejected says so.
		invoke := func(t *testing.T, c *connections.Connection) (retried bool) {
			tok, err := e.m.Token(ctx, c)
			if e.record(err) != nil {
				t.Errorf("Token() error = %v", err)
				return false
			}
			if !e.m.Rejected(ctx, c, tok) {
				return false
			}
			if _, err := e.m.Token(ctx, c); e.record(err) != nil {
				t.Errorf("Token() for the retry error = %v", err)
			}
			return true
		}
		tests := []struct {
			name       string
			concurrent bool
		}{
			{name: "in a row"},
			{name: "concurrent", concurrent: true},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				id := fmt.Sprintf("rejected-%d", i)
				c := e.create(clientCredentials(fmt.Sprintf("Conn_Rejected_%d", i), ts.URL(), id))
				if _, err := e.m.Token(ctx, c); e.record(err) != nil {
					t.Fatal(err)
				}
				var mu sync.Mutex
				retries := 0
				var wg sync.WaitGroup
				for range 20 {
					call := func() {
						if invoke(t, c) {
							mu.Lock()
							retries++
							mu.Unlock()
						}
					}
					if tt.concurrent {
						wg.Go(call)
					} else {
						call()
					}
				}
				wg.Wait()
				if got := ts.countBy(byClient)[id]; got != 2 {
					t.Errorf("token requests for 20 rejections within the cool-down = %d, want 2 (the first token and one new one)", got)
				}
				if !tt.concurrent && retries != 1 {
					t.Errorf("Rejected() = true %d times for 20 rejections in a row, want once", retries)
				}

				e.clock.Advance(cooldown)
				if !invoke(t, c) {
					t.Errorf("Rejected() after the cool-down = false, want true")
				}
				if got := ts.countBy(byClient)[id]; got != 3 {
					t.Errorf("token requests after the cool-down = %d, want 3 (one more)", got)
				}
			})
		}
	})
}

func TestRefreshTokenKeptOrRotated(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		c := e.create(authorizationCode("Conn_Refresh_Token", ts.srv.URL+"/authorize", ts.URL(), "rt", canary+"-secret-rt"))
		rt := ts.newFamily("rt")
		e.seed(c, canary+"-seeded", rt, e.clock.Now().Add(-55*time.Minute), time.Hour)

		// Without rotation the response has no refresh_token: keep ours.
		ts.script(func(s *tokenServer) { s.rotate = false })
		v := e.stored(c).Version
		refreshDue(e.m)
		st := e.stored(c)
		if tok, err := e.m.Token(ctx, c); e.record(err) != nil || tok.RefreshToken.Reveal() != rt {
			t.Errorf("Token() after a refresh without refresh_token = %v, refresh token kept %v; want the old one kept",
				err, err == nil && tok.RefreshToken.Reveal() == rt)
		}
		if st.Version != v+1 || st.Token.AccessToken.Reveal() == canary+"-seeded" {
			t.Fatalf("RefreshDue did not store a new token (version %d, was %d)", st.Version, v)
		}
		if got := st.Token.RefreshToken.Reveal(); got != rt {
			t.Errorf("stored refresh token = %q, want the old %q kept", got, rt)
		}
		if _, hasRT := ts.log()[0].Form["refresh_token"]; !hasRT {
			t.Errorf("refresh request without refresh_token")
		}

		// With rotation the new refresh token is stored with the new access
		// token, in one write.
		ts.script(func(s *tokenServer) { s.rotate = true })
		v = st.Version
		tok, err := e.m.Refresh(ctx, c)
		if e.record(err) != nil {
			t.Fatal(err)
		}
		cur, _ := ts.current(rt)
		st = e.stored(c)
		if st.Version != v+1 {
			t.Errorf("version after a rotating refresh = %d, want %d (one write)", st.Version, v+1)
		}
		if got := st.Token.RefreshToken.Reveal(); got == rt || got != cur {
			t.Errorf("stored refresh token = %q, want the rotated %q", got, cur)
		}
		if !st.Token.AccessToken.Equal(tok.AccessToken) || !tok.RefreshToken.Equal(st.Token.RefreshToken) {
			t.Errorf("stored access token or refresh token differs from the returned token")
		}
		var ct []byte
		if err := e.db.Raw("SELECT refresh_token FROM tokens WHERE connection_id = ?", c.ID).Row().Scan(&ct); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(ct, []byte(cur)) {
			t.Errorf("refresh token stored in plaintext")
		}
		if pt, err := e.ring.Open(ct, store.TokenAD(c.ID, "refresh")); err != nil || string(pt) != cur {
			t.Errorf("stored refresh token decrypts to %q, %v; want the rotated one", pt, err)
		}
		// The rotated token works on the next refresh; the old one is gone.
		if _, err := e.m.Refresh(ctx, c); e.record(err) != nil {
			t.Errorf("refresh with the rotated token: %v", err)
		}
		if got := ts.errors("invalid_grant"); got != 0 {
			t.Errorf("invalid_grant answers = %d, want 0", got)
		}
	})
}

// TestSlowProcessLosesToNewerToken: a process whose token request
// outlives its lease (it hung, or died) is replaced by another process, and
// its late answer never overwrites the newer token. The processes' clocks
// may show the same instant in different zones, as around a DST change.
func TestSlowProcessLosesToNewerToken(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	zones := []struct {
		name       string
		slow, fast *time.Location
	}{
		{name: "UTC", slow: time.UTC, fast: time.UTC},
		{name: "local time across a DST change", slow: time.FixedZone("CEST", 2*3600), fast: time.FixedZone("CET", 3600)},
	}
	forEngine(t, func(t *testing.T, engine storetest.Engine) {
		for _, z := range zones {
			t.Run(z.name, func(t *testing.T) {
				e := newTokenEnv(t, engine)
				ts := newTokenServer(t, e.clock.Now)
				hold, release := newHold(t)
				ts.script(func(s *tokenServer) { s.hold = hold })
				in := func(loc *time.Location) func(*security.ManagerConfig) {
					return func(cfg *security.ManagerConfig) { cfg.Now = func() time.Time { return e.clock.Now().In(loc) } }
				}
				slow, fast := e.replica(in(z.slow)), e.replica(in(z.fast))
				c := e.create(clientCredentials("Conn_Slow_Process", ts.URL(), "slow"))

				// The slow process takes the lease and hangs in the token request.
				wait, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				_, err := slow.Token(wait, c)
				cancel()
				waitFor(5*time.Second, ts.busy)
				if err == nil || !ts.busy() {
					t.Fatalf("slow Token() = %v, endpoint busy %v; want it hanging in the token request", err, ts.busy())
				}
				ts.script(func(s *tokenServer) { s.hold = nil })

				// Once the lease has run out, another process takes over.
				e.clock.Advance(slow.LeaseFor() + time.Second)
				wait, cancel = context.WithTimeout(context.Background(), 3*time.Second)
				newer, err := fast.Token(wait, c)
				cancel()
				if e.record(err) != nil {
					t.Fatalf("Token() in another process after the lease ran out = %v, want a token", err)
				}

				// The slow answer arrives late and loses the version check.
				release()
				wait, cancel = context.WithTimeout(context.Background(), 3*time.Second)
				got, err := slow.Token(wait, c)
				cancel()
				if e.record(err) != nil {
					t.Fatalf("slow Token() after its answer = %v, want the newer token", err)
				}
				if !got.AccessToken.Equal(newer.AccessToken) {
					t.Errorf("slow process returned its own late token, want the newer one")
				}
				waitFor(3*time.Second, func() bool { return ts.count() >= 2 })
				st := e.stored(c)
				if st.Version != 1 || !st.Token.AccessToken.Equal(newer.AccessToken) {
					t.Errorf("stored token version %d (newer one: %v), want version 1 holding the newer token",
						st.Version, st.Token.AccessToken.Equal(newer.AccessToken))
				}
				if st.LeaseOwner != "" {
					t.Errorf("lease still held by %q", st.LeaseOwner)
				}
				if got := ts.count(); got != 2 {
					t.Errorf("token requests = %d, want 2 (the hung one and the takeover)", got)
				}
			})
		}
	})
}

// TestOneRefreshPerProcess: in one process, the scheduled refresh, a
// caller whose token expired and a refresh asked for by hand may want the
// same connection's token at once. One refresh token must be sent once:
// a rotating endpoint takes a second use for theft and revokes the grant.
func TestOneRefreshPerProcess(t *testing.T) {
	t.Parallel() // mostly waiting: the scheduler's jitter, slow endpoints
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		hold, release := newHold(t)
		ts.script(func(s *tokenServer) { s.hold = hold })
		ctx := context.Background()
		c := e.create(authorizationCode("Conn_One_Refresh", ts.srv.URL+"/authorize", ts.URL(), "one", canary+"-secret-one"))
		rt := ts.newFamily("one")
		e.seed(c, canary+"-seeded", rt, e.clock.Now().Add(-2*time.Hour), time.Hour) // expired: due and invalid

		var wg sync.WaitGroup
		wg.Go(func() { refreshDue(e.m) })
		waitFor(5*time.Second, ts.busy)
		results := make(chan error, 2)
		wg.Go(func() {
			_, err := e.m.Token(ctx, c)
			results <- e.record(err)
		})
		wg.Go(func() {
			_, err := e.m.Refresh(ctx, c)
			results <- e.record(err)
		})
		time.Sleep(300 * time.Millisecond) // let them reach the endpoint, if they would
		release()
		wg.Wait()
		close(results)
		for err := range results {
			if err != nil {
				t.Errorf("Token()/Refresh() during a scheduled refresh = %v, want a token", err)
			}
		}
		if got := ts.errors("invalid_grant"); got != 0 {
			t.Errorf("the rotating endpoint answered invalid_grant %d times (refresh token reused %d times), want 0", got, ts.reused())
		}
		if got := ts.count(); got > 2 {
			t.Errorf("token requests = %d, want at most 2 (the scheduled refresh and the forced one, one after the other)", got)
		}
		cur, alive := ts.current(rt)
		if st := e.stored(c); !alive || st.Token.RefreshToken.Reveal() != cur {
			t.Errorf("stored refresh token is not the endpoint's current one (grant alive: %v)", alive)
		}
		if got := e.get(c.Name).Status; got != connections.StatusConfigured {
			t.Errorf("status = %s, want CONFIGURED", got)
		}
	})
}

// TestRefreshRefusedNeedsConsent: for an authorization-code connection, a
// permanent 400 or 401 to a refresh_token grant, with or without an error
// code, means the refresh token is dead: NEEDS_CONSENT, and Token fails
// with ErrNeedsConsent. Transient answers, other statuses and other
// policies do not (#9 item 4).
func TestRefreshRefusedNeedsConsent(t *testing.T) {
	tests := []struct {
		name        string
		policy      connections.Policy
		status      int
		code        string // "" answers a plain-text body
		wantConsent bool
		transient   bool
	}{
		{name: "400 invalid_grant", status: http.StatusBadRequest, code: "invalid_grant", wantConsent: true},
		{name: "400 without an error code", status: http.StatusBadRequest, wantConsent: true},
		{name: "400 invalid_request", status: http.StatusBadRequest, code: "invalid_request", wantConsent: true},
		{name: "401 invalid_client", status: http.StatusUnauthorized, code: "invalid_client", wantConsent: true},
		{name: "401 without an error code", status: http.StatusUnauthorized, wantConsent: true},
		{name: "403 without an error code", status: http.StatusForbidden},
		{name: "400 temporarily_unavailable", status: http.StatusBadRequest, code: "temporarily_unavailable", transient: true},
		{name: "503", status: http.StatusServiceUnavailable, transient: true},
		{name: "client credentials, 400 invalid_grant", policy: security.PolicyClientCredentials,
			status: http.StatusBadRequest, code: "invalid_grant"},
	}
	forTokenEnvs(t, nil, func(t *testing.T, e *tokenEnv, ts *tokenServer) {
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.at(t)
				id := fmt.Sprintf("refused-%d", i)
				name := fmt.Sprintf("Conn_Refused_%d", i)
				var c *connections.Connection
				if tt.policy == security.PolicyClientCredentials {
					c = e.create(clientCredentials(name, ts.URL(), id))
				} else {
					c = e.create(authorizationCode(name, ts.srv.URL+"/authorize", ts.URL(), id, canary+"-secret-"+id))
				}
				// Expired: Token must refresh.
				e.seed(c, canary+"-seeded-"+id, ts.newFamily(id), e.clock.Now().Add(-2*time.Hour), time.Hour)
				ts.failWith(tt.status, tt.code, "")
				defer ts.recover()

				_, err := e.m.Token(ctx, c)
				e.record(err)
				if got := errors.Is(err, security.ErrNeedsConsent); got != tt.wantConsent || err == nil {
					t.Fatalf("Token() = %v; wraps ErrNeedsConsent: %v, want %v", err, got, tt.wantConsent)
				}
				wantStatus := connections.StatusError
				if tt.wantConsent {
					wantStatus = connections.StatusNeedsConsent
				}
				if got := e.get(c.Name).Status; got != wantStatus {
					t.Errorf("status = %s, want %s", got, wantStatus)
				}
				if te := tokenErr(t, err); te.Permanent == tt.transient {
					t.Errorf("TokenError.Permanent = %v, want %v", te.Permanent, !tt.transient)
				}
				// A dead refresh token is not tried again by the scheduler.
				n := ts.countBy(byClient)[id]
				e.clock.Advance(10 * time.Minute)
				refreshDue(e.m)
				if got := ts.countBy(byClient)[id] - n; got != 0 && !tt.transient {
					t.Errorf("scheduled refreshes after a permanent failure = %d, want 0", got)
				}
			})
		}

		// Before a refresh token is declared dead, the stored token is read
		// again: another replica may have rotated it a moment ago.
		t.Run("rotated by another replica meanwhile", func(t *testing.T) {
			e := e.at(t)
			c := e.create(authorizationCode("Conn_Refused_Rotated", ts.srv.URL+"/authorize", ts.URL(), "rotated", canary+"-secret-rotated"))
			e.seed(c, canary+"-seeded-rotated", ts.newFamily("rotated"), e.clock.Now().Add(-2*time.Hour), time.Hour)
			hold, release := newHold(t)
			ts.script(func(s *tokenServer) { s.hold = hold })
			done := make(chan error, 1)
			var slow *security.Token
			go func() {
				var err error
				slow, err = e.m.Token(ctx, c) // sends the refresh token, then hangs
				done <- err
			}()
			waitFor(5*time.Second, ts.busy)
			if !ts.busy() {
				t.Fatal("Token() did not reach the token endpoint within 5s")
			}
			ts.script(func(s *tokenServer) { s.hold = nil })

			// Its lease runs out; a replica refreshes with the same refresh
			// token, and the endpoint rotates it.
			e.clock.Advance(e.m.LeaseFor() + time.Second)
			replica := e.replica()
			newer, err := replica.Refresh(ctx, c)
			if e.record(err) != nil {
				t.Fatalf("replica Refresh() = %v", err)
			}
			release() // the late request presents the old refresh token: invalid_grant
			if err := <-done; e.record(err) != nil {
				t.Fatalf("Token() after the replica's rotation = %v, want the replica's token", err)
			}
			refused := ts.countBy(func(r tokenRequest) string { return r.Client + " " + r.Error })["rotated invalid_grant"]
			if refused != 1 {
				t.Fatalf("invalid_grant answers = %d, want 1 (the late request)", refused)
			}
			if !slow.AccessToken.Equal(newer.AccessToken) {
				t.Errorf("Token() = another token, want the one the replica stored")
			}
			if got := e.get(c.Name).Status; got != connections.StatusConfigured {
				t.Errorf("status = %s, want CONFIGURED", got)
			}
			if info, err := e.m.Info(ctx, c); err != nil || info.Blocked || info.LastError != "" {
				t.Errorf("Info() = %+v, %v; want not blocked, no last error", info, err)
			}
		})
	})
}

// jwtToken signs claims with method and key.
func jwtToken(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

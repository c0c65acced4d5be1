// Command sidebyside is the other half of bench/sidebyside.sh: with
// -upstream it answers a 600-byte JSON document on every path (and a
// token endpoint at /token); with -proxy it is a bare
// httputil.ReverseProxy to -target that sets a fixed Authorization header,
// the baseline connmgr and Caddy are compared with.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

func main() {
	upstream := flag.String("upstream", "", "listen address of the upstream")
	proxy := flag.String("proxy", "", "listen address of the bare proxy")
	target := flag.String("target", "", "the upstream's URL (with -proxy)")
	flag.Parse()
	switch {
	case *upstream != "":
		body := []byte(`{"items":"` + strings.Repeat("x", 586) + `"}` + "\n")
		http.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"access_token":"sidebyside-token","token_type":"Bearer","expires_in":3600}`))
		})
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		})
		log.Fatal(http.ListenAndServe(*upstream, nil))
	case *proxy != "":
		u, err := url.Parse(*target)
		if err != nil {
			log.Fatal(err)
		}
		p := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Header.Set("Authorization", "Bearer sidebyside-token")
		}, Transport: &http.Transport{MaxIdleConnsPerHost: 64},
			// wrk closes its connections mid-request at the end of a run.
			ErrorLog: log.New(io.Discard, "", 0)}
		log.Fatal(http.ListenAndServe(*proxy, p))
	default:
		log.Fatal("sidebyside: -upstream or -proxy")
	}
}

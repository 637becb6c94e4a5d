package metricsauth

import (
	"crypto/tls"
	"flag"
	"testing"
)

func TestServerOptions(t *testing.T) {
	for name, tc := range map[string]struct {
		args                []string
		wantSecure          bool
		wantAddr, wantCerts string
	}{
		"defaults: HTTPS with authentication on 8443": {wantSecure: true, wantAddr: ":8443"},
		"given certificates":                          {args: []string{"--metrics-cert-dir=/etc/metrics-tls"}, wantSecure: true, wantAddr: ":8443", wantCerts: "/etc/metrics-tls"},
		"plain HTTP for development":                  {args: []string{"--metrics-secure=false", "--metrics-bind-address=127.0.0.1:9090"}, wantAddr: "127.0.0.1:9090"},
		"off":                                         {args: []string{"--metrics-bind-address=0"}, wantSecure: true, wantAddr: "0"},
	} {
		t.Run(name, func(t *testing.T) {
			o := DefaultOptions()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			o.BindFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			got := o.ServerOptions()
			if got.BindAddress != tc.wantAddr || got.SecureServing != tc.wantSecure || got.CertDir != tc.wantCerts {
				t.Errorf("ServerOptions() = address %q, secure %v, cert dir %q; want %q, %v, %q",
					got.BindAddress, got.SecureServing, got.CertDir, tc.wantAddr, tc.wantSecure, tc.wantCerts)
			}
			// Secure serving always authenticates and authorizes, and
			// speaks HTTP/1.1 only; plain serving has no filter to skip.
			if (got.FilterProvider != nil) != tc.wantSecure {
				t.Errorf("FilterProvider set: %v, want %v", got.FilterProvider != nil, tc.wantSecure)
			}
			if tc.wantSecure {
				cfg := &tls.Config{NextProtos: []string{"h2"}}
				for _, f := range got.TLSOpts {
					f(cfg)
				}
				if len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "http/1.1" {
					t.Errorf("NextProtos = %v, want http/1.1 only", cfg.NextProtos)
				}
			}
		})
	}
}

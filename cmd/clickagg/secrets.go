package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/clickagg/clickagg/server"
)

// envSecret reads a secret from the environment only, never from a flag, so
// it does not show in process lists or shell history: NAME, or the file
// named by NAME_FILE (as Docker and Kubernetes secrets are mounted).
func envSecret(name string) (string, error) {
	if v, ok := os.LookupEnv(name); ok {
		return v, nil
	}
	path := os.Getenv(name + "_FILE")
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: %w", name, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// tlsFlags are the TLS options of one client connection.
type tlsFlags struct {
	name, env            string // flag and variable prefixes, for errors
	on                   bool
	ca, cert, key        string
	serverName           string
	insecureSkipVerifyOK bool
}

// register adds --NAME-tls, --NAME-tls-ca, ... with CLICKAGG_ENV_TLS... variables.
func (t *tlsFlags) register(f *flags, name, env, what string) {
	t.name, t.env = name, env
	f.v(&t.on, name+"-tls", env+"_TLS", "connect to "+what+" over TLS")
	f.v(&t.ca, name+"-tls-ca", env+"_TLS_CA", "PEM file of the CAs that sign "+what+"'s certificate (default: the system's)")
	f.v(&t.cert, name+"-tls-cert", env+"_TLS_CERT", "PEM client certificate for "+what+" (mutual TLS)")
	f.v(&t.key, name+"-tls-key", env+"_TLS_KEY", "PEM key of the client certificate")
	f.v(&t.serverName, name+"-tls-server-name", env+"_TLS_SERVER_NAME", "name expected in "+what+"'s certificate (default: the host dialled)")
	f.v(&t.insecureSkipVerifyOK, name+"-tls-insecure-skip-verify", env+"_TLS_INSECURE_SKIP_VERIFY", "do not verify "+what+"'s certificate (testing only)")
}

// where names the flag --NAME-tls-SUFFIX and its variable.
func (t *tlsFlags) where(suffix string) string {
	return fmt.Sprintf("--%s-tls%s [%s_TLS%s]", t.name, suffix, t.env, strings.ToUpper(strings.ReplaceAll(suffix, "-", "_")))
}

// config is nil when TLS is off. A TLS setting given while TLS is off is
// an error: it would be ignored.
func (t *tlsFlags) config() (*tls.Config, error) {
	if !t.on {
		for _, o := range []struct {
			suffix string
			set    bool
		}{{"-ca", t.ca != ""}, {"-cert", t.cert != ""}, {"-key", t.key != ""}, {"-server-name", t.serverName != ""}, {"-insecure-skip-verify", t.insecureSkipVerifyOK}} {
			if o.set {
				return nil, fmt.Errorf("%s is set while %s is off", t.where(o.suffix), t.where(""))
			}
		}
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.serverName, InsecureSkipVerify: t.insecureSkipVerifyOK}
	if t.ca != "" {
		pem, err := os.ReadFile(t.ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.where("-ca"), err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s: no PEM certificate", t.where("-ca"), t.ca)
		}
	}
	if t.cert != "" || t.key != "" {
		pair, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", t.where("-cert"), t.where("-key"), err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// redisConfig is where serve's Redis credentials and TLS come from.
type redisConfig struct{ tls tlsFlags }

func (r *redisConfig) register(f *flags, o *server.RedisOptions) {
	f.redisAddr(&o.Addr)
	f.v(&o.User, "redis-user", "CLICKAGG_REDIS_USER", "Redis ACL user (password: CLICKAGG_REDIS_PASSWORD or CLICKAGG_REDIS_PASSWORD_FILE)")
	f.v(&o.DB, "redis-db", "CLICKAGG_REDIS_DB", "Redis database number")
	r.tls.register(f, "redis", "CLICKAGG_REDIS", "Redis")
	f.after = append(f.after, func() (err error) {
		if o.Password, err = envSecret("CLICKAGG_REDIS_PASSWORD"); err != nil {
			return err
		}
		o.TLS, err = r.tls.config()
		return err
	})
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
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
	on                   bool
	ca, cert, key        string
	serverName           string
	insecureSkipVerifyOK bool
}

// register adds --NAME-tls, --NAME-tls-ca, ... with CLICKAGG_ENV_TLS... variables.
func (t *tlsFlags) register(f *flags, name, env, what string) {
	f.bool(&t.on, name+"-tls", env+"_TLS", false, "connect to "+what+" over TLS")
	f.str(&t.ca, name+"-tls-ca", env+"_TLS_CA", "", "PEM file of the CAs that sign "+what+"'s certificate (default: the system's)")
	f.str(&t.cert, name+"-tls-cert", env+"_TLS_CERT", "", "PEM client certificate for "+what+" (mutual TLS)")
	f.str(&t.key, name+"-tls-key", env+"_TLS_KEY", "", "PEM key of the client certificate")
	f.str(&t.serverName, name+"-tls-server-name", env+"_TLS_SERVER_NAME", "", "name expected in "+what+"'s certificate (default: the host dialled)")
	f.bool(&t.insecureSkipVerifyOK, name+"-tls-insecure-skip-verify", env+"_TLS_INSECURE_SKIP_VERIFY", false, "do not verify "+what+"'s certificate (testing only)")
}

// config is nil when TLS is off.
func (t *tlsFlags) config() (*tls.Config, error) {
	if !t.on {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.serverName, InsecureSkipVerify: t.insecureSkipVerifyOK}
	if t.ca != "" {
		pem, err := os.ReadFile(t.ca)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate", t.ca)
		}
	}
	if t.cert != "" || t.key != "" {
		pair, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// redisConfig is how clickagg reaches Redis.
type redisConfig struct {
	addr, user string
	db         int
	tls        tlsFlags
}

func (r *redisConfig) register(f *flags) {
	f.redis(&r.addr)
	f.str(&r.user, "redis-user", "CLICKAGG_REDIS_USER", "", "Redis ACL user (password: CLICKAGG_REDIS_PASSWORD or CLICKAGG_REDIS_PASSWORD_FILE)")
	f.int(&r.db, "redis-db", "CLICKAGG_REDIS_DB", 0, "Redis database number")
	r.tls.register(f, "redis", "CLICKAGG_REDIS", "Redis")
}

// options are the go-redis options: the cache bounds each call, so
// go-redis honours those deadlines and fails fast while Redis is down
// instead of retrying.
func (r *redisConfig) options() (*redis.Options, error) {
	pw, err := envSecret("CLICKAGG_REDIS_PASSWORD")
	if err != nil {
		return nil, err
	}
	tc, err := r.tls.config()
	if err != nil {
		return nil, fmt.Errorf("redis %w", err)
	}
	return &redis.Options{
		Addr: r.addr, Username: r.user, Password: pw, DB: r.db, TLSConfig: tc,
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		MaxRetries:            -1,
	}, nil
}

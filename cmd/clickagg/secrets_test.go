package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/server"
)

func TestEnvSecret(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(file, []byte("s3cret\n"), 0o600)
	t.Setenv("CLICKAGG_TEST_PW_FILE", file)
	if v, err := envSecret("CLICKAGG_TEST_PW"); err != nil || v != "s3cret" {
		t.Errorf("from file: %q %v", v, err)
	}
	t.Setenv("CLICKAGG_TEST_PW", "direct")
	if v, _ := envSecret("CLICKAGG_TEST_PW"); v != "direct" {
		t.Errorf("the variable itself wins: %q", v)
	}
	os.Unsetenv("CLICKAGG_TEST_PW")
	t.Setenv("CLICKAGG_TEST_PW_FILE", file+".missing")
	if _, err := envSecret("CLICKAGG_TEST_PW"); err == nil || !strings.Contains(err.Error(), "CLICKAGG_TEST_PW_FILE") {
		t.Errorf("missing file: %v", err)
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clickagg test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestRedisTLS reaches a real redis-server that only speaks TLS and wants
// a client certificate, with the options serve builds from its flags.
func TestRedisTLS(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Must(t, err)
		return
	}
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	port := testenv.FreePort(t)
	srv := exec.Command(bin, "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert, "--tls-auth-clients", "yes",
		"--save", "", "--appendonly", "no", "--dir", dir, "--requirepass", "pw")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })

	f := newFlags("serve", "")
	var rc redisConfig
	var ro server.RedisOptions
	rc.register(f, &ro)
	t.Setenv("CLICKAGG_REDIS_PASSWORD", "pw")
	if err := f.parse([]string{"--redis-addr", "127.0.0.1:" + strconv.Itoa(port), "--redis-tls",
		"--redis-tls-ca", cert, "--redis-tls-cert", cert, "--redis-tls-key", key}, 0); err != nil {
		t.Fatal(err)
	}
	o := ro.ClientOptions()
	o.DialTimeout = 2 * time.Second
	rdb := redis.NewClient(o)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		err = rdb.Ping(ctx).Err()
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ping over TLS: %v", err)
	}
	// Without TLS the same server is unreachable: the test did use TLS.
	o2 := *o
	o2.TLSConfig = nil
	plain := redis.NewClient(&o2)
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Error("plain TCP ping succeeded against a TLS-only port")
	}
	// A missing CA file is an error naming the flag's purpose, not a panic.
	f = newFlags("serve", "")
	rc.register(f, &ro)
	if err := f.parse([]string{"--redis-tls", "--redis-tls-ca", filepath.Join(dir, "none.pem")}, 0); err == nil || !strings.Contains(err.Error(), "--redis-tls-ca [CLICKAGG_REDIS_TLS_CA]") {
		t.Errorf("missing CA: %v", err)
	}
}

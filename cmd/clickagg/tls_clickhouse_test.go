package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	agg "github.com/clickagg/clickagg"
	"github.com/clickagg/clickagg/chclient"
	"github.com/clickagg/clickagg/ingestor"
	"github.com/clickagg/clickagg/internal/testenv"
	"github.com/clickagg/clickagg/schema"
	"github.com/clickagg/clickagg/services"
)

// writeRSACert writes a self-signed RSA certificate for 127.0.0.1 (the
// OpenSSL of ClickHouse 18.16's Poco takes RSA keys without further setup).
func writeRSACert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "ch-cert.pem"), filepath.Join(dir, "ch-key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	return certFile, keyFile
}

// TestClickHouseTLSAndPassword runs a private ClickHouse that serves TLS
// (https and the secure native port) and a user with a password, then
// migrates through the native port and inserts through https with the
// options the flags build: the production settings on a real server.
func TestClickHouseTLSAndPassword(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeRSACert(t, dir)
	httpsPort, securePort := testenv.FreePort(t), testenv.FreePort(t)
	// config.d and users.d beside config.xml are merged into it by the server.
	os.MkdirAll(filepath.Join(dir, "config.d"), 0o755)
	os.MkdirAll(filepath.Join(dir, "users.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "config.d", "tls.xml"), []byte(fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <https_port>%d</https_port>
  <tcp_port_secure>%d</tcp_port_secure>
  <openSSL><server>
    <certificateFile>%s</certificateFile><privateKeyFile>%s</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
    <cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols>
    <preferServerCiphers>true</preferServerCiphers>
  </server></openSSL>
</yandex>
`, httpsPort, securePort, cert, key)), 0o644)
	os.WriteFile(filepath.Join(dir, "users.d", "app.xml"), []byte(`<?xml version="1.0"?>
<yandex><users><app>
  <password>s3cret pass</password>
  <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
  <profile>default</profile><quota>default</quota>
</app></users></yandex>
`), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ch, err := services.StartClickHouse(ctx, dir, 0, 0)
	testenv.Must(t, err)
	t.Cleanup(func() { ch.Kill() })

	f := newFlags("serve", "")
	var o chclient.Options
	f.clickhouse(&o)
	t.Setenv("CLICKAGG_CLICKHOUSE_PASSWORD", "s3cret pass")
	err = f.parse([]string{
		"--clickhouse-http", "https://127.0.0.1:" + strconv.Itoa(httpsPort),
		"--clickhouse-native", "127.0.0.1:" + strconv.Itoa(securePort),
		"--clickhouse-database", "tls_test", "--clickhouse-user", "app",
		"--clickhouse-tls", "--clickhouse-tls-ca", cert,
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.MigrateUp(ctx, o); err != nil {
		t.Fatalf("migrate over TLS: %v", err)
	}
	tr, err := ingestor.NewHTTP(ingestor.HTTPOptions{URL: o.HTTP, Database: o.Database, User: o.User, Password: o.Password, TLS: o.TLS})
	if err != nil {
		t.Fatal(err)
	}
	in := ingestor.New(tr, ingestor.Options{Linger: time.Millisecond})
	var rows ingestor.Rows
	rows.SetReceived(time.Now())
	for i := range 3 {
		ev := agg.Event{EventID: "tls-" + strconv.Itoa(i), Type: agg.Impression, Time: time.Now().Truncate(time.Millisecond),
			AdID: "a1", CampaignID: "c1", UserID: "u1", Country: [2]byte{'K', 'R'}, AdFormat: agg.FormatBanner, Device: agg.DeviceIOS}
		rows.Append(&ev, false)
	}
	if err := in.Add(ctx, &rows); err != nil {
		t.Fatalf("insert over https: %v", err)
	}
	in.Close(ctx)
	conn, err := chclient.OpenNative(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&n); err != nil || n != 3 {
		t.Fatalf("count over TLS: %d %v", n, err)
	}
	// A wrong password is refused, and the error does not carry it.
	bad := o
	bad.Password = "wrong-secret"
	if c, err := chclient.OpenNative(ctx, bad); err == nil {
		c.Close()
		t.Error("wrong password accepted")
	} else if strings.Contains(err.Error(), "wrong-secret") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows the password: %v", err)
	}
}

// Package schema holds clickagg's ClickHouse schema as golang-migrate
// migrations embedded in the binary, and the golang-migrate database driver
// that applies them over clickhouse-go/v2.
//
// golang-migrate's own clickhouse driver links clickhouse-go v1, which cannot
// live in one binary with v2 (both register database/sql driver
// "clickhouse"), and its VALUES insert hangs against 18.16 over v2. This
// driver talks v2's native API directly and records versions with a
// server-side INSERT ... SELECT, which works on 18.16 and on modern servers.
package schema

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"slices"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/source/iofs"

	"github.com/clickagg/clickagg/chclient"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrator applies the embedded migrations to one database.
type Migrator struct {
	m   *migrate.Migrate
	drv *Driver
}

// NewMigrator connects to o's database, creating it when missing.
func NewMigrator(ctx context.Context, o chclient.Options) (*Migrator, error) {
	if err := chclient.EnsureDatabase(ctx, o); err != nil {
		return nil, err
	}
	conn, err := chclient.OpenNative(ctx, o)
	if err != nil {
		return nil, err
	}
	o = o.WithDefaults()
	drv, err := WithConn(ctx, conn, Target{Cluster: o.Cluster, Database: o.Database})
	if err != nil {
		conn.Close()
		return nil, err
	}
	src, err := iofs.New(migrations, "migrations")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("migration source: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "clickhouse", drv)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("migrator: %w", err)
	}
	return &Migrator{m: m, drv: drv}, nil
}

// Up applies every migration not yet applied.
func (m *Migrator) Up() error { return m.noted(ignoreNoChange(m.m.Up())) }

// Down reverts every applied migration.
func (m *Migrator) Down() error { return ignoreNoChange(m.m.Down()) }

// Steps applies n migrations up (n > 0) or reverts -n.
func (m *Migrator) Steps(n int) error { return m.noted(ignoreNoChange(m.m.Steps(n))) }

// noted, after a migration succeeded, makes the sketch view again where
// an older server dropped it and notes the rollups the migrations made
// (and the sketches, where this server keeps them).
func (m *Migrator) noted(err error) error {
	if err != nil {
		return err
	}
	ctx := context.Background()
	keeps, err := m.sketchView(ctx)
	if err != nil {
		return err
	}
	tables := Rollups
	if keeps {
		tables = append(slices.Clone(Rollups), Sketches)
	}
	return noteRollups(ctx, m.drv.conn, m.drv.target, tables)
}

// Version returns the applied version (0 when none) and whether a failed
// migration left it dirty.
func (m *Migrator) Version() (uint, bool, error) {
	v, dirty, err := m.m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return 0, false, nil
	}
	return v, dirty, err
}

// Force records version v as applied and clean, after a failed migration
// was repaired by hand.
func (m *Migrator) Force(v int) error { return m.m.Force(v) }

// Latest is the highest embedded migration version.
func Latest() (uint, error) {
	src, err := iofs.New(migrations, "migrations")
	if err != nil {
		return 0, err
	}
	defer src.Close()
	v, err := src.First()
	for err == nil {
		next, nerr := src.Next(v)
		if nerr != nil {
			break
		}
		v = next
	}
	return v, err
}

// Close releases the connection.
func (m *Migrator) Close() error {
	serr, derr := m.m.Close()
	return errors.Join(serr, derr)
}

func ignoreNoChange(err error) error {
	if errors.Is(err, migrate.ErrNoChange) {
		return nil
	}
	return err
}

// MigrateUp applies every embedded migration not yet applied to o's
// database, creating it when missing.
func MigrateUp(ctx context.Context, o chclient.Options) error {
	m, err := NewMigrator(ctx, o)
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Up()
}

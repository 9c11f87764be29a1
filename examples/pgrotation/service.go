package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/resource"
)

// serviceConfig is the service's configuration. The connection string, password included,
// lives in Key Vault; the service reads it through its managed identity.
const serviceConfig = `
database:
  conn: "@KeyVault(SecretUri=https://appvault.vault.azure.net/secrets/pg-conn/)"
  max_conns: 8
`

// service keeps a pgx pool built from database.* and queries through it. When the
// connection string is rotated, resource.Resource builds a new pool, checks it, moves
// traffic to it and drains the old one; a new pool that cannot connect is not used.
type service struct {
	log *slog.Logger
	p   *viperkv.Provider
	db  *resource.Resource[*dbPool]

	stop    context.CancelFunc
	watched chan error

	swaps    atomic.Int64 // new pools put in service after the first
	failures atomic.Int64 // attempts to open a new pool that failed, retries included
	drained  atomic.Int64 // old pools closed after their last query
}

// dbPool is a pool and the login role it connects as (a name, not a secret).
type dbPool struct {
	*pgxpool.Pool
	user string
}

// startService loads the configuration, opens the first pool and starts watching.
func startService(ctx context.Context, log *slog.Logger, opts ...viperkv.Option) (*service, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(serviceConfig)); err != nil {
		return nil, err
	}
	p, err := viperkv.New(v, append([]viperkv.Option{viperkv.WithLogger(log)}, opts...)...)
	if err != nil {
		return nil, err
	}
	if err := p.Load(ctx); err != nil {
		return nil, err
	}
	s := &service{log: log, p: p}
	first := true // the first build has no pool to fall back on: resource.New fails instead
	s.db, err = resource.New(ctx, p, []string{"database"},
		func(ctx context.Context, c *viper.Viper) (*dbPool, error) {
			pool, err := s.open(ctx, c)
			switch {
			case err != nil && !first:
				s.failures.Add(1)
				s.log.Error("database: the new credential does not work; still serving on the current pool",
					"sqlstate", pgErrorCode(err), "error", err)
			case err == nil && !first:
				s.swaps.Add(1)
			}
			first = false
			return pool, err
		},
		s.close)
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop, s.watched = stop, make(chan error, 1)
	go func() { s.watched <- p.Watch(wctx) }()
	return s, nil
}

// open builds a pool from the configuration c and makes every connection it will hold,
// so a pool that cannot log in is never used and the first queries on it do not wait
// for connections. Errors name the role and the cause, never the connection string.
func (s *service) open(ctx context.Context, c *viper.Viper) (*dbPool, error) {
	cfg, err := pgxpool.ParseConfig(c.GetString("database.conn"))
	if err != nil {
		// A parse error may quote the string it could not parse: say only that.
		return nil, errors.New("database.conn is not a valid PostgreSQL connection string")
	}
	if n := c.GetInt("database.max_conns"); n > 0 {
		cfg.MaxConns = int32(n)
	}
	user := cfg.ConnConfig.User
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		if err = warm(ctx, pool); err != nil {
			pool.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connecting as %s: %w", user, err)
	}
	s.log.Info("database: new pool ready; moving traffic to it", "user", user, "conns", pool.Stat().TotalConns())
	return &dbPool{Pool: pool, user: user}, nil
}

// warm opens all of the pool's connections and pings each, one at a time: the CPU that
// SCRAM authentication costs is spread out rather than taken from the serving pool at once.
func warm(ctx context.Context, pool *pgxpool.Pool) error {
	var conns []*pgxpool.Conn
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		if err := c.Ping(ctx); err != nil {
			return err
		}
	}
	return nil
}

// close retires a pool: resource.Resource calls it after the last query on it finished.
func (s *service) close(old *dbPool) {
	old.Close()
	s.drained.Add(1)
	s.log.Info("database: old pool drained and closed", "user", old.user)
}

// widget reads one row through the current pool. The lease keeps the pool open until the
// query is done, even if a rotation swaps it out meanwhile.
func (s *service) widget(ctx context.Context, id int) (string, error) {
	pool, done := s.db.Acquire()
	defer done()
	if pool == nil {
		return "", errors.New("service stopped")
	}
	var name string
	err := pool.QueryRow(ctx, "SELECT name FROM widgets WHERE id = $1", id).Scan(&name)
	return name, err
}

// health is the service's status surface. A failed rotation does not make the service
// unready (it still serves on the previous pool), but it is reported as degraded.
type health struct {
	Status   string `json:"status"`          // "ok" or "degraded"
	User     string `json:"user"`            // the role the serving pool connects as
	Swaps    int64  `json:"swaps"`           // pools replaced by a newer one
	Drained  int64  `json:"drained"`         // old pools closed after their last query
	Failures int64  `json:"failed_builds"`   // attempts to open a new pool that failed, retries included
	Error    string `json:"error,omitempty"` // why the latest credential is not in use
}

func (s *service) health() health {
	h := health{Status: "ok", Swaps: s.swaps.Load(), Drained: s.drained.Load(), Failures: s.failures.Load()}
	if pool, done := s.db.Acquire(); pool != nil {
		h.User = pool.user
		done()
	}
	if err := s.db.Err(); err != nil {
		h.Status, h.Error = "degraded", err.Error()
	}
	return h
}

// ServeHTTP serves GET /healthz.
func (s *service) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.health())
}

// shutdown stops watching and closes the pool once its queries are done.
func (s *service) shutdown() {
	s.stop()
	<-s.watched
	s.db.Close()
}

// pgErrorCode returns the SQLSTATE of a PostgreSQL error, or "".
func pgErrorCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

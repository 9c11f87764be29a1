package main

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The two-user rotation pattern. The privileges belong to a group role that cannot log in;
// two login roles are members of it. At any time one is live (named by the secret) and the
// other idle. A rotation gives the idle role a fresh password, checks it works, publishes a
// secret version naming it, and only after a grace period (long enough for every consumer
// to move to the new version and drain its old connections) invalidates the old role's
// password and ends its leftover sessions. So the secret never names a credential that
// does not work, and consumers never lose the one they are using.
const (
	groupRole = "app"
	blueRole  = "app_blue"
	greenRole = "app_green"
	database  = "app"
)

// prepareDatabase creates the application's database, the group role owning its
// privileges, the two login roles (without passwords yet) and a table to query.
func prepareDatabase(ctx context.Context, c *cluster) error {
	conn, err := pgx.Connect(ctx, c.adminConnString("postgres"))
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+database)
	conn.Close(ctx)
	if err != nil {
		return err
	}
	if conn, err = pgx.Connect(ctx, c.adminConnString(database)); err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, stmt := range []string{
		"CREATE ROLE " + groupRole + " NOLOGIN",
		"GRANT CONNECT ON DATABASE " + database + " TO " + groupRole,
		"REVOKE CONNECT ON DATABASE " + database + " FROM PUBLIC",
		"CREATE TABLE widgets (id int PRIMARY KEY, name text NOT NULL)",
		"INSERT INTO widgets SELECT i, 'widget ' || i FROM generate_series(1, 1000) i",
		"GRANT SELECT, INSERT, UPDATE, DELETE ON widgets TO " + groupRole,
		// Login roles hold nothing themselves: they inherit from the group. Objects must be
		// created as the group (SET ROLE app) so that neither login role owns them.
		"CREATE ROLE " + blueRole + " LOGIN INHERIT IN ROLE " + groupRole,
		"CREATE ROLE " + greenRole + " LOGIN INHERIT IN ROLE " + groupRole,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	return nil
}

// rotator rotates the database credential in the secret with two login roles.
type rotator struct {
	admin   *pgxpool.Pool     // a role allowed to ALTER ROLE (here the superuser)
	secrets *azsecrets.Client // an identity allowed to set secrets (Key Vault Secrets Officer)
	secret  string            // the secret holding the connection string
	host    string            // host:port the service connects to
	grace   time.Duration     // from publishing a version to invalidating the old role
	drain   time.Duration     // how long the old role's sessions may take to end after that
	log     *slog.Logger

	setAt map[string]time.Time // the server's clock when each role's current password was set
}

// rotation is what one rotation did.
type rotation struct {
	version    string // the secret version published
	from, to   string // the roles
	terminated int    // leftover sessions of the old role ended after the drain period
}

// rotate performs one rotation; see the pattern above. It returns once the old role is
// retired. If the new credential cannot be verified, nothing is published and the live
// credential is untouched.
func (r *rotator) rotate(ctx context.Context) (rotation, error) {
	live, err := r.liveRole(ctx)
	if err != nil {
		return rotation{}, err
	}
	idle := otherRole(live)
	res := rotation{from: live, to: idle}

	// 1. A fresh password for the idle role, then prove it works as the service will use it.
	password := newPassword()
	if err := r.setPassword(ctx, idle, password); err != nil {
		return res, err
	}
	conn := r.connString(idle, password)
	if err := verify(ctx, conn); err != nil {
		return res, fmt.Errorf("the new credential for %s does not work; not publishing it: %w", idle, err)
	}
	// 2. Publish a version naming it.
	if res.version, err = r.publish(ctx, idle, conn); err != nil {
		return res, err
	}
	r.log.Info("rotator: published a new credential", "secret", r.secret, "version", res.version, "role", idle)

	// 3. Grace period: consumers pick the version up, switch, and drain the old pool.
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(r.grace):
	}

	// 4. Retire the old role: no new logins with its password, then end what is left.
	if err := r.execf(ctx, "ALTER ROLE %s WITH PASSWORD NULL", ident(live)); err != nil {
		return res, err
	}
	if res.terminated, err = r.endSessions(ctx, live); err != nil {
		return res, err
	}
	r.log.Info("rotator: retired the old credential", "role", live, "sessions_terminated", res.terminated)
	return res, nil
}

// bootstrap gives the first role its password and publishes the first version.
func (r *rotator) bootstrap(ctx context.Context) (string, error) {
	password := newPassword()
	if err := r.setPassword(ctx, blueRole, password); err != nil {
		return "", err
	}
	conn := r.connString(blueRole, password)
	if err := verify(ctx, conn); err != nil {
		return "", err
	}
	return r.publish(ctx, blueRole, conn)
}

// liveRole is the login role consumers use now: the one with a password. If both have one
// (a rotation was interrupted during its grace period), the one the secret names.
func (r *rotator) liveRole(ctx context.Context) (string, error) {
	rows, _ := r.admin.Query(ctx, "SELECT rolname FROM pg_authid WHERE rolname = ANY($1) AND rolpassword IS NOT NULL ORDER BY rolname",
		[]string{blueRole, greenRole})
	withPassword, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	switch len(withPassword) {
	case 0:
		return "", errors.New("neither login role has a password: bootstrap first")
	case 1:
		return withPassword[0], nil
	}
	resp, err := r.secrets.GetSecret(ctx, r.secret, "", nil)
	if err != nil {
		return "", err
	}
	if resp.Tags["role"] != nil {
		if role := *resp.Tags["role"]; role == blueRole || role == greenRole {
			return role, nil
		}
	}
	return "", fmt.Errorf("both login roles have passwords and the latest version of %s names neither", r.secret)
}

// setPassword sets a role's password as a SCRAM verifier computed here: the password itself
// never reaches the server, its logs or pg_stat_activity.
func (r *rotator) setPassword(ctx context.Context, role, password string) error {
	verifier, err := scramVerifier(password)
	if err != nil {
		return err
	}
	var now time.Time
	if err := r.admin.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
		return err
	}
	if err := r.execf(ctx, "ALTER ROLE %s WITH LOGIN PASSWORD %s", ident(role), literal(verifier)); err != nil {
		return err
	}
	r.setAt[role] = now
	return nil
}

// publish sets a new version of the secret and returns it.
func (r *rotator) publish(ctx context.Context, role, conn string) (string, error) {
	contentType := "application/x-postgresql-connection-string"
	resp, err := r.secrets.SetSecret(ctx, r.secret, azsecrets.SetSecretParameters{
		Value: &conn, ContentType: &contentType, Tags: map[string]*string{"role": &role},
	}, nil)
	if err != nil {
		return "", fmt.Errorf("publishing a new version of %s: %w", r.secret, err)
	}
	return resp.ID.Version(), nil
}

// endSessions waits up to the drain period for the role's sessions to end, then
// terminates those left and returns how many it terminated.
func (r *rotator) endSessions(ctx context.Context, role string) (int, error) {
	deadline := time.Now().Add(r.drain)
	for {
		var n int
		if err := r.admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role).Scan(&n); err != nil {
			return 0, err
		}
		if n == 0 {
			return 0, nil
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	var n int
	err := r.admin.QueryRow(ctx, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1) t", role).Scan(&n)
	if n > 0 {
		r.log.Warn("rotator: terminated sessions of the old role still open after the drain period", "role", role, "sessions", n)
	}
	return n, err
}

// retiredSessions counts open sessions that logged in with a credential no longer valid:
// those of a role without a password, and those older than their role's current password.
func (r *rotator) retiredSessions(ctx context.Context) (int, error) {
	rows, _ := r.admin.Query(ctx, `SELECT a.usename, a.backend_start, r.rolpassword IS NULL
		FROM pg_stat_activity a JOIN pg_authid r ON r.rolname = a.usename WHERE a.usename = ANY($1)`,
		[]string{blueRole, greenRole})
	n := 0
	var role string
	var started time.Time
	var noPassword bool
	_, err := pgx.ForEachRow(rows, []any{&role, &started, &noPassword}, func() error {
		if noPassword || started.Before(r.setAt[role]) {
			n++
		}
		return nil
	})
	return n, err
}

// connString is the connection string the secret holds.
func (r *rotator) connString(role, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(role, password), Host: r.host, Path: "/" + database,
		RawQuery: "sslmode=disable"} // a loopback test server; use sslmode=verify-full elsewhere
	return u.String()
}

func (r *rotator) execf(ctx context.Context, format string, args ...any) error {
	_, err := r.admin.Exec(ctx, fmt.Sprintf(format, args...))
	return err
}

// verify connects with conn string s and pings. Its error names the role, not the password.
func verify(ctx context.Context, s string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

func otherRole(role string) string {
	if role == blueRole {
		return greenRole
	}
	return blueRole
}

// newPassword returns 192 random bits, URL-safe.
func newPassword() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// scramVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for a password
// (RFC 7677, PostgreSQL's format), as libpq's PQencryptPasswordConn does.
func scramVerifier(password string) (string, error) {
	const iterations = 4096
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	storedKey := sha256.Sum256(mac(salted, "Client Key"))
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return "SCRAM-SHA-256$" + strconv.Itoa(iterations) + ":" + b64(salt) + "$" + b64(storedKey[:]) + ":" + b64(serverKey), nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// literal quotes s as an SQL string literal (standard_conforming_strings is on).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

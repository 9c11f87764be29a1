package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv"
	"github.com/viperkv/viperkv/internal/reveal"
)

// Exit statuses of run's own failures, as env(1), nohup(1) and docker run use them.
const (
	exitNotResolved = 125 // references did not resolve: the command was not started
	exitCannotRun   = 126 // the command exists but could not be started
	exitNotFound    = 127 // the command was not found
)

type runFlags struct {
	lf              loadFlags
	noMasking       bool
	watch           bool
	grace           time.Duration
	refreshInterval time.Duration
	versionCheck    string
	push            pushFlags
	render          renderFlags
	reloadSignal    string
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARGS...]",
		Short: "Run a command with the Key Vault references in its environment resolved",
		Long: `Resolve the Key Vault references in environment variables (any variable whose value holds
one, such as DB_CONN=@KeyVault(...), whole or inside a longer string) and, with --config,
in a configuration file whose keys are exported as variables (database.conn with
--env-prefix APP: APP_DATABASE_CONN), then run COMMAND with that environment.

- Signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH) are forwarded
  to the command, and its exit status is viperkv's.
- Secret values in the command's stdout and stderr are replaced with
  "<concealed by viperkv>", even when split across writes, unless --no-masking. The
  output then goes through a pipe, not the terminal. Masking guards against accidents,
  not transformations (a part of a value, base64); values shorter than 6 characters are
  not concealed, and viperkv warns about each.
- With --watch, versionless references are re-checked every --refresh-interval (and the
  configuration file is watched); when a value changes, viperkv says so (never the
  value), sends SIGTERM to the command's process group (the command and every process
  it started), waits up to --stop-timeout for all of them to exit, sends SIGKILL to
  those left, and only then starts the command again with the new environment. A
  signal that stops viperkv ends the group the same way.
- With --watch --listen ADDR, viperkv also takes Key Vault's events from Event Grid on
  ADDR (Event Grid or CloudEvents schema), so a rotation restarts the command within a
  second instead of a refresh interval. Authentication is required: --eventgrid-audience
  (Microsoft Entra ID tokens of --eventgrid-tenant, from Event Grid, with the app role)
  and/or --eventgrid-header NAME with the value in $VIPERKV_EVENTGRID_HEADER_VALUE
  (never on the command line, and not passed to the command).

- With --render TEMPLATE:OUT (repeatable), Go templates over the resolved configuration
  are rendered into files (mode --render-mode, 0600 by default, written atomically; see
  viperkv render --help) before the command starts and, under --watch, again on each
  rotation before the command is signalled or restarted. A render that fails leaves the
  files as they were and the command running as it is.
- With --watch --reload-signal HUP (or USR1, USR2), a rotation re-renders the files and
  sends that signal to the command's process group instead of restarting it, for
  programs that re-read their files on a signal (nginx, HAProxy, many servers). Its
  environment keeps the values it started with: read secrets from the rendered files.

If a reference does not resolve (or a template fails), the command is not started and the
exit status is 125; 126 means the command could not be started, 127 that it was not found.`,
		Example: `  # Twelve-factor: the reference is in the environment
  export DB_CONN='@KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/db-conn/)'
  viperkv run -- ./server

  # A config file's keys as variables (APP_DATABASE_CONN, ...), restarting on rotation
  viperkv run --config config.yaml --env-prefix APP --watch --stop-timeout 30s -- ./server --port 8080

  # nginx re-reads its configuration on SIGHUP: render it, and reload instead of restarting
  viperkv run --config config.yaml --watch --render nginx.conf.tmpl:/etc/nginx/nginx.conf \
    --reload-signal HUP -- nginx -g 'daemon off;'

  # Rotations pushed by Event Grid (Entra-protected webhook), polling hourly as the safety net
  viperkv run --watch --refresh-interval 1h --listen :8443 --listen-cert tls.crt --listen-key tls.key \
    --eventgrid-tenant $AZURE_TENANT_ID --eventgrid-audience api://my-webhook -- ./server`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("missing COMMAND: viperkv run [flags] -- COMMAND [ARGS...]")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.grace <= 0 {
				return usageError("--stop-timeout must be positive")
			}
			if f.refreshInterval <= 0 {
				return usageError("--refresh-interval must be positive")
			}
			for _, name := range []string{"refresh-interval", "version-check"} {
				if cmd.Flags().Changed(name) && !f.watch {
					return usageError("--%s needs --watch: without it the command's environment is resolved once", name)
				}
			}
			if err := f.push.check(f.watch); err != nil {
				return err
			}
			if f.reloadSignal != "" {
				if !f.watch {
					return usageError("--reload-signal needs --watch: without it nothing rotates")
				}
				if len(f.render.specs) == 0 {
					return usageError("--reload-signal needs --render: a running command cannot see a new environment, only files it re-reads")
				}
			}
			switch viperkv.VersionCheck(f.versionCheck) {
			case viperkv.VersionCheckAuto, viperkv.VersionCheckList, viperkv.VersionCheckGet:
			default:
				return usageError("--version-check %q: want auto, list or get", f.versionCheck)
			}
			return runRun(cmd, &f, args)
		},
	}
	// Flags after COMMAND belong to COMMAND, with or without "--".
	cmd.Flags().SetInterspersed(false)
	f.lf.register(cmd)
	cmd.Flags().BoolVar(&f.noMasking, "no-masking", false, "do not conceal secret values in the command's output")
	cmd.Flags().BoolVar(&f.watch, "watch", false, "restart the command when a secret rotates or the config file changes")
	cmd.Flags().DurationVar(&f.grace, "stop-timeout", 10*time.Second, "how long the command's process group has to exit after SIGTERM (a rotation under --watch, or viperkv stopped) before SIGKILL")
	cmd.Flags().DurationVar(&f.grace, "grace", 10*time.Second, "the same as --stop-timeout")
	_ = cmd.Flags().MarkDeprecated("grace", "use --stop-timeout")
	cmd.Flags().DurationVar(&f.refreshInterval, "refresh-interval", viperkv.DefaultRefreshInterval,
		"with --watch: how often versionless references are re-checked for a new version (try 2s against the emulator)")
	cmd.Flags().StringVar(&f.versionCheck, "version-check", string(viperkv.VersionCheckAuto),
		"with --watch: how a refresh finds new versions: list (a list of each vault, then GETs of what changed), get (a GET per secret) or auto (whichever costs fewer requests)")
	f.push.register(cmd)
	cmd.Flags().StringArrayVar(&f.render.specs, "render", nil, "render a Go template over the resolved configuration into a file before the command starts (and on rotation), TEMPLATE:OUT; repeatable")
	f.render.registerMode(cmd, "render-mode")
	cmd.Flags().StringVar(&f.reloadSignal, "reload-signal", "", "with --watch and --render: on rotation, re-render and send this signal (HUP, USR1 or USR2) to the command's process group instead of restarting it")
	return cmd
}

func runRun(cmd *cobra.Command, f *runFlags, args []string) error {
	rend, err := f.render.renderer()
	if err != nil {
		return err
	}
	var reload os.Signal
	if f.reloadSignal != "" {
		if reload, err = reloadSignal(f.reloadSignal); err != nil {
			return usageError("--reload-signal %q: %v", f.reloadSignal, err)
		}
	}
	stderr := cmd.ErrOrStderr()
	say := func(format string, a ...any) { fmt.Fprintf(stderr, "viperkv: "+format+"\n", a...) }
	// The child's environment is this one, not the one options() adds the emulator's
	// identity variables to.
	environ := withoutVar(os.Environ(), eventGridHeaderValueEnv)
	v, err := f.lf.viper()
	if err != nil {
		return err
	}
	refs := addEnvRefs(v, environ)
	opts, err := f.lf.options(stderr)
	if err != nil {
		return err
	}
	p, err := viperkv.New(v, append(opts, viperkv.WithRefreshInterval(f.refreshInterval), viperkv.WithPushDelay(f.push.delay),
		viperkv.WithVersionCheck(viperkv.VersionCheck(f.versionCheck)))...)
	if err != nil {
		return err
	}
	var listener *pushListener
	if f.push.listen != "" {
		// Listening before the Load: Event Grid gets 503 until the configuration is
		// loaded, and a port that is taken stops viperkv before the command starts.
		if listener, err = f.push.start(p, f.lf.emulatorTenant, say); err != nil {
			return err
		}
		defer listener.close()
	}

	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)

	// Resolve. A signal to stop meanwhile ends viperkv; no command has started yet.
	lctx, cancel := context.WithCancel(cmd.Context())
	loaded := make(chan error, 1)
	go func() { loaded <- p.Load(lctx) }()
	var lerr error
resolving:
	for {
		select {
		case lerr = <-loaded:
			break resolving
		case sig := <-sigs:
			if stopping(sig) {
				cancel()
				<-loaded
				return exitStatus(signalStatus(sig))
			}
		}
	}
	cancel()
	if lerr != nil {
		return &exitError{code: exitNotResolved, err: notResolved(p.Status(), refs, args[0])}
	}
	if err := rend.render(p.Viper()); err != nil {
		return &exitError{code: exitNotResolved, err: fmt.Errorf("%w; %s was not started", err, args[0])}
	}

	sup := &supervisor{args: args, stdin: os.Stdin, stdout: cmd.OutOrStdout(), stderr: stderr, grace: f.grace, say: say, reload: reload,
		reloadName: "SIG" + strings.TrimPrefix(strings.ToUpper(f.reloadSignal), "SIG")}
	if !f.noMasking {
		sup.mask = &secretSet{}
		warnShort(say, sup.mask.addSecrets(reveal.Secrets(p)))
	}
	env := childEnv(environ, refs, p.Viper(), &f.lf)
	c, err := sup.start(env)
	if err != nil {
		return startFailure(args[0], err)
	}
	if f.watch {
		say("started the command (pid %d, its own process group)", c.cmd.Process.Pid)
	}

	var next func() ([]string, string)
	var restart chan struct{}
	if f.watch {
		var mu sync.Mutex
		var why []string
		restart = make(chan struct{}, 1)
		unsubscribe := p.OnChange(func(e viperkv.Event) {
			switch e.Kind {
			case viperkv.EventChanged:
				mu.Lock()
				why = append(why, describeChange(e))
				mu.Unlock()
				select {
				case restart <- struct{}{}:
				default:
				}
			case viperkv.EventError:
				say("warning: %s: %s; the command keeps its current values", describeSecret(e, refs), eventReason(e))
			case viperkv.EventRecovered:
				say("%s resolves again", describeSecret(e, refs))
			case viperkv.EventNearExpiry:
				say("warning: %s: version %s expires at %s", describeSecret(e, refs), e.NewVersion, e.Expires.UTC().Format(time.RFC3339))
			}
		})
		defer unsubscribe()
		wctx, stopWatch := context.WithCancel(context.Background())
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			if err := p.Watch(wctx); err != nil && !errors.Is(err, context.Canceled) {
				say("warning: --watch: %v; rotations will not restart the command", err)
			}
		}()
		defer func() { stopWatch(); <-watched }()

		next = func() ([]string, string) {
			newEnv := childEnv(environ, refs, p.Viper(), &f.lf)
			changed := changedNames(env, newEnv)
			mu.Lock()
			reasons := strings.Join(why, "; ")
			why = nil
			mu.Unlock()
			if len(changed) == 0 {
				return nil, ""
			}
			// Files first: the command, restarted or signalled, must find them current. A
			// failure changes nothing; the next change tries again.
			if err := rend.render(p.Viper()); err != nil {
				say("warning: %s; the command keeps its current values and files", bare(err))
				return nil, ""
			}
			if sup.mask != nil {
				warnShort(say, sup.mask.addSecrets(reveal.Secrets(p)))
			}
			env = newEnv
			return newEnv, strings.Join(changed, ", ") + " changed (" + reasons + ")"
		}
	}

	code, err := sup.loop(c, sigs, restart, next)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitStatus(code)
	}
	return nil
}

// notResolved lists the failed references, naming environment variables by name.
func notResolved(status []viperkv.ReferenceStatus, refs *envRefs, command string) error {
	var b strings.Builder
	n := 0
	for _, st := range status {
		if st.Status == viperkv.StatusResolved {
			continue
		}
		n++
		fmt.Fprintf(&b, "\n  %s: %s: %s", refs.display(st.Key), st.Status, st.Reason)
	}
	return fmt.Errorf("%d reference(s) not resolved; %s was not started:%s", n, command, b.String())
}

// childEnv is environ with the referencing variables resolved and, with --config, the
// configuration exported as variables (which win, as Viper's AutomaticEnv already applied
// the environment to them).
func childEnv(environ []string, refs *envRefs, resolved *viper.Viper, lf *loadFlags) []string {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if name, value, ok := strings.Cut(kv, "="); ok {
			vars[name] = value
		}
	}
	for n, v := range refs.values(resolved) {
		vars[n] = v
	}
	if lf.config != "" || len(lf.vaultSources) > 0 { // the file's keys and the vault sources' become variables
		for n, v := range envVars(resolved.AllSettings(), lf.envPrefix) {
			vars[n] = v
		}
	}
	return sortedEnv(vars)
}

// changedNames lists the variables whose values differ between two environments.
func changedNames(a, b []string) []string {
	am, bm := map[string]string{}, map[string]string{}
	for _, kv := range a {
		n, v, _ := strings.Cut(kv, "=")
		am[n] = v
	}
	for _, kv := range b {
		n, v, _ := strings.Cut(kv, "=")
		bm[n] = v
	}
	var out []string
	for n, v := range bm {
		if old, ok := am[n]; !ok || old != v {
			out = append(out, n)
		}
	}
	for n := range am {
		if _, ok := bm[n]; !ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func describeChange(e viperkv.Event) string {
	if e.Secret.Name == "" {
		return "the configuration file changed"
	}
	s := fmt.Sprintf("secret %s/%s version %s -> %s", e.Secret.Vault, e.Secret.Name, dash(e.OldVersion), dash(e.NewVersion))
	if e.Source == viperkv.SourcePush {
		s += ", pushed by Key Vault's event"
	}
	return s
}

func describeSecret(e viperkv.Event, refs *envRefs) string {
	keys := make([]string, len(e.Keys))
	for i, k := range e.Keys {
		keys[i] = refs.display(k)
	}
	what := "configuration"
	if e.Secret.Name != "" {
		what = "secret " + e.Secret.Vault + "/" + e.Secret.Name
	}
	if len(keys) > 0 {
		what += " (" + strings.Join(keys, ", ") + ")"
	}
	return what
}

// eventReason says why a refresh failed: the status and reason of a reference, or the
// event's error (a config file that does not parse). Neither holds a value.
func eventReason(e viperkv.Event) string {
	var re *viperkv.ReferenceError
	switch {
	case errors.As(e.Err, &re) && re.Reason != "":
		return string(re.Status) + ": " + re.Reason
	case e.Err != nil:
		return strings.TrimSuffix(bare(e.Err), "; keeping the last good configuration")
	}
	return string(e.Status)
}

func startFailure(name string, err error) error {
	code := exitCannotRun
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		code = exitNotFound
	}
	return &exitError{code: code, err: fmt.Errorf("cannot run %s: %v", name, err)}
}

// supervisor runs the command, forwards signals and restarts it on rotation.
type supervisor struct {
	args           []string
	stdin          io.Reader
	stdout, stderr io.Writer
	mask           *secretSet // nil: no masking
	grace          time.Duration
	reload         os.Signal // on rotation, send this instead of restarting (nil: restart)
	reloadName     string    // its name, as SIGHUP
	say            func(format string, a ...any)
}

type child struct {
	cmd    *exec.Cmd
	group  *processGroup // the command and every process it starts
	done   chan struct{} // closed once the process has exited and its output is written
	status int
}

func (s *supervisor) start(env []string) (*child, error) {
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Env = env
	cmd.Stdin = s.stdin
	var masks []*maskWriter
	if s.mask != nil {
		o, e := newMaskWriter(s.stdout, s.mask), newMaskWriter(s.stderr, s.mask)
		cmd.Stdout, cmd.Stderr = o, e
		masks = []*maskWriter{o, e}
		// A background process the command leaves behind may hold the pipes open: do not
		// wait for it to pass the command's exit status on.
		cmd.WaitDelay = time.Second
	} else {
		cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	}
	cmd.SysProcAttr = childAttr(s.stdin)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, group: newProcessGroup(cmd.Process), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the status is in ProcessState; output errors change nothing
		for _, m := range masks {
			_ = m.Flush()
		}
		c.status = statusOf(cmd.ProcessState)
		close(c.done)
	}()
	return c, nil
}

// signal sends sig to the command's process group (the command and every process it
// started), or to the command alone where there is no group.
func (c *child) signal(sig os.Signal) {
	if c.group.signal(sig) != nil {
		_ = c.cmd.Process.Signal(sig)
	}
}

// loop forwards signals until the command exits and returns its status. When restart
// fires, next returns the new environment and why (nil if nothing the command sees
// changed), and the command is restarted gracefully. A signal to stop viperkv ends the
// command's whole group before viperkv returns.
func (s *supervisor) loop(c *child, sigs <-chan os.Signal, restart <-chan struct{}, next func() ([]string, string)) (int, error) {
	quitting := false
	for {
		select {
		case sig := <-sigs:
			if stopping(sig) && !quitting {
				quitting = true
				s.stop(c, sigs, sig)
				return c.status, nil
			}
			c.signal(sig)
		case <-c.done:
			return c.status, nil
		case <-restart:
			if quitting {
				continue
			}
			env, why := next()
			if env == nil {
				continue
			}
			if s.reload != nil {
				s.say("rotation: %s; files rendered, %s sent to the command's process group (its environment keeps the values it started with)", why, s.reloadName)
				c.signal(s.reload)
				continue
			}
			s.say("rotation: %s; restarting the command: SIGTERM to its process group, then SIGKILL after %s", why, s.grace)
			quitting = s.stop(c, sigs, stopSignal)
			if quitting {
				return c.status, nil
			}
			nc, err := s.start(env)
			if err != nil {
				return 0, startFailure(s.args[0], err)
			}
			s.say("restarted the command (pid %d)", nc.cmd.Process.Pid)
			c = nc
		}
	}
}

// stop ends the command's whole process group gracefully: sig to the group, then, after
// --stop-timeout, SIGKILL; it returns when the command has exited and no process of its
// group remains, so the next command starts only once the old one (with the old secrets in
// its environment, and its ports) is gone. It reports whether a signal to stop viperkv came
// meanwhile (passed on to the group, like any other).
func (s *supervisor) stop(c *child, sigs <-chan os.Signal, sig os.Signal) (quitting bool) {
	c.signal(sig)
	timer := time.NewTimer(s.grace)
	defer timer.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	killed := false
	for {
		select {
		case sig := <-sigs:
			quitting = quitting || stopping(sig)
			c.signal(sig)
		case <-timer.C:
			s.say("the command's process group did not exit within %s; sending SIGKILL", s.grace)
			c.signal(killSignal)
			killed = true
		case <-tick.C:
		}
		select {
		case <-c.done:
			if !c.group.alive() {
				c.group.release()
				return quitting
			}
		default:
		}
		if killed {
			timer.Reset(time.Hour) // once killed, only the group's end is waited for
		}
	}
}

// warnShort says which secrets are too short to be concealed in the command's output, so
// that the user knows what masking does not cover (as CI systems warn about short masked
// variables).
func warnShort(say func(string, ...any), short []string) {
	for _, name := range short {
		say("warning: secret %s is shorter than %d characters: it is not concealed in the command's output "+
			"(concealing it would hide common text and give the value away by where the marks fall)", name, minMaskLen)
	}
}

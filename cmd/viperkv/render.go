package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/viperkv/viperkv/internal/certparse"
)

// rendering is one template and the file it is rendered into.
type rendering struct {
	template string // the template's path, to name it in errors
	out      string
	tmpl     *template.Template
}

// renderer renders templates over the resolved configuration into files, all or none: a
// file is replaced only when every template rendered, atomically (a temporary file beside
// it, renamed over it), so a reader never sees half a file and a failure leaves the
// previous files as they were.
type renderer struct {
	files []rendering
	mode  fs.FileMode
}

// newRenderer parses the templates of specs ("TEMPLATE:OUT" each). Parse errors are
// usage errors: nothing has been resolved yet.
func newRenderer(specs []string, mode fs.FileMode) (*renderer, error) {
	if mode&0o007 != 0 {
		return nil, usageError("mode %#o: a rendered file holds secrets and is never world-readable or world-writable; use 0600 or 0640", mode)
	}
	r := &renderer{mode: mode}
	outs := map[string]bool{}
	for _, spec := range specs {
		in, out, ok := strings.Cut(spec, ":")
		if !ok || in == "" || out == "" {
			return nil, usageError("--render %q: want TEMPLATE:OUT (a template file and the file to write)", spec)
		}
		abs, err := filepath.Abs(out)
		if err != nil {
			return nil, usageError("--render %q: %v", spec, err)
		}
		if outs[abs] {
			return nil, usageError("--render %q: %s is written by another --render too", spec, out)
		}
		outs[abs] = true
		text, err := os.ReadFile(in)
		if err != nil {
			return nil, usageError("reading template %s: %v", in, err)
		}
		tmpl, err := template.New(filepath.Base(in)).Option("missingkey=error").Funcs(templateFuncs(nil)).Parse(string(text))
		if err != nil {
			return nil, usageError("template %s: %v", in, err)
		}
		r.files = append(r.files, rendering{template: in, out: out, tmpl: tmpl})
	}
	return r, nil
}

// templateFuncs are the functions a template may call. get reads a key as Viper does
// (case-insensitive, with the key delimiter); reading a key that is not set is an error,
// so that a reference that failed never renders as an empty value.
func templateFuncs(v *viper.Viper) template.FuncMap {
	return template.FuncMap{
		"get": func(key string) (any, error) {
			if v == nil || !v.IsSet(key) {
				return nil, fmt.Errorf("key %q is not set", key)
			}
			return v.Get(key), nil
		},
		// certPEM and keyPEM write a certificate kept in Key Vault (PKCS#12 or PEM) the way
		// nginx and Envoy read it: the leaf and its chain, and the private key (PKCS#8).
		"certPEM": func(key string) (string, error) {
			c, err := templateCertificate(v, key)
			if err != nil {
				return "", err
			}
			var out []byte
			for _, der := range c.TLS.Certificate {
				out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
			}
			return string(out), nil
		},
		"keyPEM": func(key string) (string, error) {
			c, err := templateCertificate(v, key)
			if err != nil {
				return "", err
			}
			der, err := x509.MarshalPKCS8PrivateKey(c.TLS.PrivateKey)
			if err != nil {
				return "", fmt.Errorf("the private key of %q cannot be written as PKCS#8", key)
			}
			return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
		},
		"json": func(x any) (string, error) {
			b, err := json.Marshal(x)
			return string(b), err
		},
		"base64": func(x any) string { return base64.StdEncoding.EncodeToString([]byte(fmt.Sprint(x))) },
		"quote":  func(x any) string { return strconv.Quote(fmt.Sprint(x)) },
		"shellquote": func(x any) string {
			return "'" + strings.ReplaceAll(fmt.Sprint(x), "'", `'\''`) + "'"
		},
	}
}

// templateCertificate reads key's certificate (a Key Vault certificate's secret).
func templateCertificate(v *viper.Viper, key string) (*certparse.Certificate, error) {
	if v == nil || !v.IsSet(key) {
		return nil, fmt.Errorf("key %q is not set", key)
	}
	c, err := certparse.Parse(v.GetString(key), "", time.Now())
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", key, err)
	}
	return c, nil
}

// render renders every template over resolved and, only if all rendered, replaces each
// file. An error names the template and the reason; it never holds a rendered value
// (text/template's errors name the template, the position and the missing key).
func (r *renderer) render(resolved *viper.Viper) error {
	if r == nil {
		return nil
	}
	data := resolved.AllSettings()
	outputs := make([][]byte, len(r.files))
	for i, f := range r.files {
		var b bytes.Buffer
		tmpl, err := f.tmpl.Clone()
		if err == nil {
			err = tmpl.Funcs(templateFuncs(resolved)).Execute(&b, data)
		}
		if err != nil {
			return fmt.Errorf("rendering %s: %w; no file was written", f.template, err)
		}
		outputs[i] = b.Bytes()
	}
	var errs []error
	for i, f := range r.files {
		if err := writeAtomic(f.out, outputs[i], r.mode); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeAtomic replaces path with data: written to a new file in the same directory (so
// the rename stays on one file system), synced, given mode, then renamed over path. A
// reader sees the old file or the new one, never a part; a symbolic link at path is
// replaced, not followed.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".viperkv-*") // created 0600, before any byte is written
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	done = true
	return nil
}

// renderFlags are the flags render and run share.
type renderFlags struct {
	specs []string
	mode  string
}

func (f *renderFlags) registerMode(cmd *cobra.Command, name string) {
	cmd.Flags().StringVar(&f.mode, name, "0600", "the mode of rendered files, in octal (never world-readable)")
}

func (f *renderFlags) renderer() (*renderer, error) {
	if len(f.specs) == 0 {
		return nil, nil
	}
	mode, err := strconv.ParseUint(f.mode, 8, 32)
	if err != nil || mode > 0o777 {
		return nil, usageError("mode %q: want an octal file mode such as 0600", f.mode)
	}
	return newRenderer(f.specs, fs.FileMode(mode))
}

func newRenderCmd() *cobra.Command {
	var (
		lf       loadFlags
		rf       renderFlags
		template string
		out      string
	)
	cmd := &cobra.Command{
		Use:   "render --template FILE --out FILE",
		Short: "Render a Go template over the resolved configuration into a file (mode 0600, written atomically)",
		Long: `Load the configuration as check does, resolve every Key Vault reference, and render a
Go template (text/template) over the resolved configuration into a file, for programs that
read their secrets from a file (nginx, a .pgpass, a client certificate).

In the template, . is the configuration ({{ .database.conn }}, keys in lower case), and
  get "database.conn"   reads a key as Viper does (any case, the key delimiter);
  certPEM "server.tls", keyPEM "server.tls"   write a Key Vault certificate (PKCS#12 or
                        PEM) as nginx and Envoy read it: the chain, and the private key;
  json, base64, quote, shellquote  encode a value.
A key that is not set is an error, never an empty value.

The file is written atomically (a temporary file beside it, renamed over it), with mode
--mode (0600 by default; a world-readable mode is refused). When a reference does not
resolve or the template fails, no file is written and an existing one is left as it was;
the exit status is 1. Nothing is printed to standard output.

viperkv run --render TEMPLATE:OUT does the same before starting the command, and again on
each rotation under --watch, before the command is signalled or restarted.`,
		Example: `  viperkv render --config config.yaml --template pgpass.tmpl --out ~/.pgpass
  # pgpass.tmpl:
  #   db.internal:5432:app:app:{{ get "database.password" }}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if template == "" || out == "" {
				return usageError("render needs --template FILE and --out FILE")
			}
			rf.specs = []string{template + ":" + out}
			if strings.Contains(template, ":") {
				return usageError("--template %q: a template path may not hold ':'", template)
			}
			r, err := rf.renderer()
			if err != nil {
				return err
			}
			return runRender(cmd, &lf, r, out)
		},
	}
	lf.register(cmd)
	cmd.Flags().StringVar(&template, "template", "", "the Go template (text/template) to render")
	cmd.Flags().StringVarP(&out, "out", "o", "", "the file to write")
	rf.registerMode(cmd, "mode")
	return cmd
}

func runRender(cmd *cobra.Command, lf *loadFlags, r *renderer, out string) error {
	v, err := lf.viper()
	if err != nil {
		return err
	}
	p, err := lf.provider(cmd, v)
	if err != nil {
		return err
	}
	if err := loadInterruptibly(cmd, p, "nothing rendered"); err != nil {
		return incomplete(err, "nothing rendered: "+out+" was left as it was")
	}
	return r.render(p.Viper())
}

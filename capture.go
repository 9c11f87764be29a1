package viperkv

import (
	"bytes"
	"os"

	"github.com/spf13/viper"

	"github.com/viperkv/viperkv/internal/viperlayers"
)

// capture is what Load read of the app's Viper, on the app's goroutine (the only place the
// provider reads it): a clone that shares no map with it, every layer and option kept, and
// what its config layer holds besides the config file (what MergeInConfig and MergeConfig
// added), so that a reload of the file keeps it.
type capture struct {
	v        *viper.Viper   // the clone; never written after the capture
	path     string         // the config file (ConfigFileUsed); "" when none
	fileBase map[string]any // the file's settings as the app's Viper holds them
	extra    map[string]any // the config layer's settings that the file does not give
}

// captureOf clones v. prevBase and applied are the file settings an earlier capture found
// in the app's Viper and the ones Watch last read from the file: the app's Viper holds one
// of them, or what is on disk now (whichever matches its config layer best), unless it
// re-read the file since.
func captureOf(v *viper.Viper, prevBase, applied map[string]any) (capture, error) {
	c := capture{v: viperlayers.Clone(v), path: v.ConfigFileUsed()}
	config := *viperlayers.Of(c.v).Config
	if c.path == "" {
		return c, nil
	}
	b, err := os.ReadFile(c.path)
	if err != nil {
		// The file went away since the app read it: what the app's Viper holds stays.
		return c, nil
	}
	disk, err := parseFile(c.v, b)
	if err != nil {
		return c, nil // a file mid-edit: Watch reports it when it reads it
	}
	c.fileBase = disk
	for _, cand := range []map[string]any{prevBase, applied} {
		if cand != nil && viperlayers.Matches(config, cand) > viperlayers.Matches(config, c.fileBase) {
			c.fileBase = cand
		}
	}
	c.extra = viperlayers.Extra(config, c.fileBase)
	*viperlayers.Of(c.v).Config = viperlayers.Merge(disk, c.extra)
	return c, nil
}

// withFile returns a clone of the captured Viper whose config layer is the file content b
// with what else the config layer held merged over it, as the app's MergeInConfig and
// MergeConfig did.
func (c capture) withFile(b []byte) (*viper.Viper, map[string]any, error) {
	f, err := parseFile(c.v, b)
	if err != nil {
		return nil, nil, err
	}
	out := viperlayers.Clone(c.v)
	*viperlayers.Of(out).Config = viperlayers.Merge(f, viperlayers.CopyMap(c.extra))
	return out, f, nil
}

// parseFile parses b as v's config type, with v's codecs, without changing v.
func parseFile(v *viper.Viper, b []byte) (map[string]any, error) {
	p := new(viper.Viper)
	*p = *v // ReadConfig gives p a config map of its own; v's is not written
	if err := p.ReadConfig(bytes.NewReader(b)); err != nil {
		return nil, err
	}
	return *viperlayers.Of(p).Config, nil
}

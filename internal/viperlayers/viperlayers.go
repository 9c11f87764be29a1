// Package viperlayers copies a viper.Viper with everything it knows, and reaches the layers
// of a copy so that values can be put in the layer they came from.
//
// Viper lets no one read back most of what shapes its answers: the key delimiter, the
// environment key replacer, the decode hook, the codec registries, aliases, which values
// came from the file, the defaults, Set, the flags or the environment. A copy that keeps all
// of it answers every key as the original does. Copying the struct by value would share its
// maps with the app, which keeps writing them; Clone deep-copies every map and freezes the
// flags, so the copy shares no mutable state with the original.
//
// It reaches Viper's unexported fields by reflection, for the one Viper version this module
// requires; Check reports at once if a Viper upgrade moved them.
package viperlayers

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"unsafe"

	"github.com/spf13/viper"
)

// Layers points into one Viper's fields: what its layers hold and how its keys are read.
// Writing through the pointers changes that Viper, so use it only on a copy of one's own.
type Layers struct {
	Config, Override, Defaults, KVStore *map[string]any
	PFlags                              *map[string]viper.FlagValue
	Env                                 *map[string][]string
	Aliases                             *map[string]string
	KeyDelim                            *string
	EnvPrefix                           *string
	AutomaticEnv                        *bool
	AllowEmptyEnv                       *bool
	Replacer                            *viper.StringReplacer
}

// fields names the fields Layers reaches, with the types this package expects.
var fields = map[string]reflect.Type{
	"config":              reflect.TypeFor[map[string]any](),
	"override":            reflect.TypeFor[map[string]any](),
	"defaults":            reflect.TypeFor[map[string]any](),
	"kvstore":             reflect.TypeFor[map[string]any](),
	"pflags":              reflect.TypeFor[map[string]viper.FlagValue](),
	"env":                 reflect.TypeFor[map[string][]string](),
	"aliases":             reflect.TypeFor[map[string]string](),
	"keyDelim":            reflect.TypeFor[string](),
	"envPrefix":           reflect.TypeFor[string](),
	"automaticEnvApplied": reflect.TypeFor[bool](),
	"allowEmptyEnv":       reflect.TypeFor[bool](),
	"envKeyReplacer":      reflect.TypeFor[viper.StringReplacer](),
	"configPaths":         reflect.TypeFor[[]string](),
	"parents":             reflect.TypeFor[[]string](),
}

// Check reports whether viper.Viper still has the fields this package reaches, with their
// types.
func Check() error {
	t := reflect.TypeFor[viper.Viper]()
	for name, want := range fields {
		f, ok := t.FieldByName(name)
		if !ok || f.Type != want {
			return fmt.Errorf("viperlayers: viper.Viper has no field %s of type %v: this Viper version is not supported", name, want)
		}
	}
	return nil
}

// offsets are the offsets of the fields of viper.Viper this package reaches, found once;
// nothing writes them after.
var offsets = func() map[string]uintptr {
	t := reflect.TypeFor[viper.Viper]()
	out := make(map[string]uintptr, len(fields))
	for name := range fields {
		if f, ok := t.FieldByName(name); ok {
			out[name] = f.Offset
		}
	}
	return out
}()

// field returns a pointer to v's field name.
func field[T any](v *viper.Viper, name string) *T {
	off, ok := offsets[name]
	if !ok {
		panic("viperlayers: " + Check().Error())
	}
	return (*T)(unsafe.Add(unsafe.Pointer(v), off))
}

// Of returns the layers of v.
func Of(v *viper.Viper) Layers {
	return Layers{
		Config:        field[map[string]any](v, "config"),
		Override:      field[map[string]any](v, "override"),
		Defaults:      field[map[string]any](v, "defaults"),
		KVStore:       field[map[string]any](v, "kvstore"),
		PFlags:        field[map[string]viper.FlagValue](v, "pflags"),
		Env:           field[map[string][]string](v, "env"),
		Aliases:       field[map[string]string](v, "aliases"),
		KeyDelim:      field[string](v, "keyDelim"),
		EnvPrefix:     field[string](v, "envPrefix"),
		AutomaticEnv:  field[bool](v, "automaticEnvApplied"),
		AllowEmptyEnv: field[bool](v, "allowEmptyEnv"),
		Replacer:      field[viper.StringReplacer](v, "envKeyReplacer"),
	}
}

// Clone returns a copy of v that shares no mutable state with it: the maps of its layers
// are copied all the way down and its flags are frozen at their current values. The
// options (key delimiter, replacer, decode hook, codecs, logger, file system) are shared:
// Viper never changes them after they are set. Call it only where reading v is safe, on
// the goroutine of a call the app made.
func Clone(v *viper.Viper) *viper.Viper {
	c := new(viper.Viper)
	*c = *v // the maps are replaced below
	from, to := Of(v), Of(c)
	*to.Config = CopyMap(*from.Config)
	*to.Override = CopyMap(*from.Override)
	*to.Defaults = CopyMap(*from.Defaults)
	*to.KVStore = CopyMap(*from.KVStore)
	*to.Env = maps.Clone(*from.Env)
	for k, names := range *to.Env {
		(*to.Env)[k] = slices.Clone(names)
	}
	*to.Aliases = maps.Clone(*from.Aliases)
	flags := make(map[string]viper.FlagValue, len(*from.PFlags))
	for k, f := range *from.PFlags {
		flags[k] = Freeze(f)
	}
	*to.PFlags = flags
	*field[[]string](c, "configPaths") = slices.Clone(*field[[]string](v, "configPaths"))
	*field[[]string](c, "parents") = slices.Clone(*field[[]string](v, "parents"))
	return c
}

// Flag is a flag frozen at one value.
type Flag struct {
	FlagName, Value, Type string
	Changed               bool
}

// Freeze returns f as it is now, unchanged by later parsing.
func Freeze(f viper.FlagValue) Flag {
	return Flag{FlagName: f.Name(), Value: f.ValueString(), Type: f.ValueType(), Changed: f.HasChanged()}
}

// HasChanged implements viper.FlagValue.
func (f Flag) HasChanged() bool { return f.Changed }

// Name implements viper.FlagValue.
func (f Flag) Name() string { return f.FlagName }

// ValueString implements viper.FlagValue.
func (f Flag) ValueString() string { return f.Value }

// ValueType implements viper.FlagValue.
func (f Flag) ValueType() string { return f.Type }

// CopyMap copies m and every map and list in it. nil stays nil.
func CopyMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = Copy(v)
	}
	return out
}

// Copy copies v if it is a map or a list, all the way down; other values are returned as
// they are (Viper's leaves are immutable values).
func Copy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return CopyMap(x)
	case map[any]any:
		out := make(map[any]any, len(x))
		for k, e := range x {
			out[k] = Copy(e)
		}
		return out
	case map[string]string:
		return maps.Clone(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = Copy(e)
		}
		return out
	case []string:
		return slices.Clone(x)
	case []map[string]any:
		out := make([]map[string]any, len(x))
		for i, e := range x {
			out[i] = CopyMap(e)
		}
		return out
	case []int:
		return slices.Clone(x)
	case []byte:
		return slices.Clone(x)
	}
	return v
}

package libservices

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"
)

// Arity says how many FSes a libservice wraps.
type Arity int

const (
	// Leaf libservices wrap nothing (memfs, passthrough).
	Leaf Arity = iota
	// Single libservices wrap exactly one FS (cache).
	Single
	// Multi libservices wrap one or more FSes, the first being the top (union).
	Multi
)

// Env is what a constructor may use besides its options.
type Env struct {
	Logger *zap.Logger
	// Shared holds objects shared by the FS instances built with this Env, such as
	// a page store several caches use; nil means nothing is shared.
	Shared *Shared
}

// Shared is a set of named objects created once and handed to every constructor
// that asks for the same name. It is safe for concurrent use.
type Shared struct {
	mu   sync.Mutex
	objs map[string]any
}

// GetOrCreate returns the object stored under key, creating it with create the
// first time. A create error is returned and nothing is stored.
func (s *Shared) GetOrCreate(key string, create func() (any, error)) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.objs[key]; ok {
		return o, nil
	}
	o, err := create()
	if err != nil {
		return nil, err
	}
	if s.objs == nil {
		s.objs = make(map[string]any)
	}
	s.objs[key] = o
	return o, nil
}

type registration struct {
	arity      Arity
	newOptions func() any
	build      func(opts any, inner []FS, env *Env) (FS, error)
}

// registryMu guards registry.
var (
	registryMu sync.Mutex
	registry   = map[string]registration{}
)

// Register makes a libservice available to Build under name. O is its options
// struct, decoded from the YAML mapping with unknown keys rejected; build receives
// it after decoding (and after O's Validate method, when it has one, succeeded).
// Register panics on a duplicate name: that is a programming error found at init.
func Register[O any](name string, arity Arity, build func(opts *O, inner []FS, env *Env) (FS, error)) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("libservices: Register called twice for " + name)
	}
	registry[name] = registration{
		arity:      arity,
		newOptions: func() any { return new(O) },
		build: func(opts any, inner []FS, env *Env) (FS, error) {
			return build(opts.(*O), inner, env)
		},
	}
}

// Registered returns the registered libservice names, sorted.
func Registered() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Validator is implemented by options structs that check themselves after
// decoding. The error should name the offending key as its first word, e.g.
// `policy: unknown policy "x"`; Build prefixes the layer's key path.
type Validator interface {
	Validate() error
}

// Layer is one item of a stack or branch list: a mapping with exactly one key, the
// libservice name, whose value is its options mapping.
type Layer struct {
	Kind string
	Opts yaml.Node
	Line int
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (l *Layer) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		return fmt.Errorf("line %d: a layer is a mapping with one key, the libservice name, e.g. `- memfs: {}`", n.Line)
	}
	l.Kind = n.Content[0].Value
	l.Opts = *n.Content[1]
	l.Line = n.Line
	return nil
}

// FilesystemConfig is one filesystem of a pool: a stack of libservices, top first,
// over its branches. The last layer of Stack wraps the branches (all of them for a
// Multi layer, exactly one for a Single layer); without branches the last layer must
// be a Leaf.
type FilesystemConfig struct {
	Name     string  `yaml:"name"`
	Stack    []Layer `yaml:"stack"`
	Branches []Layer `yaml:"branches"`
}

// ConfigError is a configuration error; Key is the path of the offending key,
// e.g. "filesystems[0].stack[0].cache.size".
type ConfigError struct {
	Key string
	Msg string
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Msg }

// ParseFilesystem decodes one FilesystemConfig from YAML, rejecting unknown keys.
func ParseFilesystem(data []byte) (*FilesystemConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c FilesystemConfig
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Build constructs the stack described by c. key is the path of c in the
// configuration (e.g. "filesystems[0]") and prefixes every error. On error, layers
// already built are closed.
func Build(c *FilesystemConfig, key string, env *Env) (FS, error) {
	if env == nil {
		env = &Env{}
	}
	if len(c.Stack) == 0 {
		return nil, &ConfigError{Key: key + ".stack", Msg: "a filesystem needs at least one layer"}
	}
	var built []FS
	fail := func(err error) (FS, error) {
		for _, f := range built {
			if cl, ok := f.(Closer); ok {
				_ = cl.CloseFS()
			}
		}
		return nil, err
	}
	var inner []FS
	for i, b := range c.Branches {
		k := fmt.Sprintf("%s.branches[%d]", key, i)
		f, err := buildLayer(&b, k, Leaf, nil, env)
		if err != nil {
			return fail(err)
		}
		built = append(built, f)
		inner = append(inner, f)
	}
	for i := len(c.Stack) - 1; i >= 0; i-- {
		l := &c.Stack[i]
		k := fmt.Sprintf("%s.stack[%d]", key, i)
		reg, ok := lookup(l.Kind)
		if !ok {
			return fail(&ConfigError{Key: k, Msg: fmt.Sprintf("unknown libservice %q (known: %s)", l.Kind, strings.Join(Registered(), ", "))})
		}
		switch reg.arity {
		case Leaf:
			if len(inner) != 0 {
				return fail(&ConfigError{Key: k + "." + l.Kind, Msg: "wraps nothing, but has layers or branches below it"})
			}
		case Single:
			if len(inner) != 1 {
				return fail(&ConfigError{Key: k + "." + l.Kind, Msg: fmt.Sprintf("wraps exactly one filesystem, got %d below it", len(inner))})
			}
		case Multi:
			if len(inner) == 0 {
				return fail(&ConfigError{Key: k + "." + l.Kind, Msg: "needs branches below it"})
			}
		}
		f, err := buildLayer(l, k, reg.arity, inner, env)
		if err != nil {
			return fail(err)
		}
		built = append(built, f)
		inner = []FS{f}
	}
	return inner[0], nil
}

func lookup(kind string) (registration, bool) {
	registryMu.Lock()
	defer registryMu.Unlock()
	r, ok := registry[kind]
	return r, ok
}

func buildLayer(l *Layer, key string, want Arity, inner []FS, env *Env) (FS, error) {
	reg, ok := lookup(l.Kind)
	if !ok {
		return nil, &ConfigError{Key: key, Msg: fmt.Sprintf("unknown libservice %q (known: %s)", l.Kind, strings.Join(Registered(), ", "))}
	}
	key += "." + l.Kind
	if want == Leaf && reg.arity != Leaf {
		return nil, &ConfigError{Key: key, Msg: "a branch must be a leaf libservice (one that wraps nothing)"}
	}
	opts := reg.newOptions()
	if err := decodeStrict(&l.Opts, reflect.ValueOf(opts).Elem(), key); err != nil {
		return nil, err
	}
	if v, ok := opts.(Validator); ok {
		if err := v.Validate(); err != nil {
			return nil, &ConfigError{Key: key, Msg: err.Error()}
		}
	}
	f, err := reg.build(opts, inner, env)
	if err != nil {
		return nil, &ConfigError{Key: key, Msg: err.Error()}
	}
	return f, nil
}

// decodeStrict decodes a mapping node into the struct v key by key, so that an
// error names the key it concerns; unknown keys are errors.
func decodeStrict(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // `- memfs:` with no value: all defaults
	}
	if n.Kind != yaml.MappingNode {
		return &ConfigError{Key: key, Msg: "options must be a mapping, e.g. {}"}
	}
	t := v.Type()
	fields := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = i
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i].Value, n.Content[i+1]
		fk := key + "." + k
		idx, ok := fields[k]
		if !ok {
			known := make([]string, 0, len(fields))
			for name := range fields {
				known = append(known, name)
			}
			sort.Strings(known)
			return &ConfigError{Key: fk, Msg: fmt.Sprintf("unknown key (known: %s)", strings.Join(known, ", "))}
		}
		if seen[k] {
			return &ConfigError{Key: fk, Msg: "duplicate key"}
		}
		seen[k] = true
		fv := v.Field(idx)
		if fv.Kind() == reflect.Struct && val.Kind == yaml.MappingNode && !fv.Addr().Type().Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
			if err := decodeStrict(val, fv, fk); err != nil {
				return err
			}
			continue
		}
		if err := val.Decode(fv.Addr().Interface()); err != nil {
			msg := err.Error()
			if te, ok := err.(*yaml.TypeError); ok && len(te.Errors) > 0 {
				msg = strings.Join(te.Errors, "; ")
			}
			return &ConfigError{Key: fk, Msg: msg}
		}
	}
	return nil
}

// ByteSize is a size in bytes that decodes from YAML as an integer or a string with
// a unit: B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB (powers of 1024), K/M/G/T
// (powers of 1024, as in cgroup and fio notation). Negative sizes are rejected.
type ByteSize int64

// ParseByteSize parses s as described for ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q", s)
	}
	mult := int64(1)
	switch strings.TrimSpace(t[i:]) {
	case "", "B":
	case "KB":
		mult = 1e3
	case "MB":
		mult = 1e6
	case "GB":
		mult = 1e9
	case "TB":
		mult = 1e12
	case "K", "KiB":
		mult = 1 << 10
	case "M", "MiB":
		mult = 1 << 20
	case "G", "GiB":
		mult = 1 << 30
	case "T", "TiB":
		mult = 1 << 40
	default:
		return 0, fmt.Errorf("bad size %q", s)
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("bad size %q: too large", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("bad size: want a number or a string such as 256MiB")
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Duration is a time.Duration that decodes from YAML as a duration string
// ("1s", "250ms") or the integer 0, which every layer's timeouts take to mean
// "no caching"; any other bare number is refused, since its unit would be a
// guess.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Value == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return fmt.Errorf("line %d: %q is not a duration (want e.g. 1s, 250ms, or 0)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// String implements fmt.Stringer, as time.Duration's.
func (d Duration) String() string { return time.Duration(d).String() }

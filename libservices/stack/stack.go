// Package stack builds a tenant filesystem from its configuration with every
// libservice of this module registered (memfs, passthrough, union, cache, cephfs): import
// it, not the registry alone, where stacks are built from YAML.
//
// It holds no state and no locks; the registry it fills is libservices'.
//
// Measure: `polytropon perf stack` builds the default stack through it.
package stack

import (
	"github.com/polytropon/polytropon/libservices"

	// Registered for Build.
	_ "github.com/polytropon/polytropon/libservices/cache"
	_ "github.com/polytropon/polytropon/libservices/cephfs"
	_ "github.com/polytropon/polytropon/libservices/memfs"
	_ "github.com/polytropon/polytropon/libservices/passthrough"
	_ "github.com/polytropon/polytropon/libservices/union"
)

// Build builds the filesystem c, whose key in the configuration is key (for
// example "filesystems[0]"); see libservices.Build.
func Build(c *libservices.FilesystemConfig, key string, env *libservices.Env) (libservices.FS, error) {
	return libservices.Build(c, key, env)
}

// BuildYAML parses one filesystem's YAML and builds it.
func BuildYAML(data []byte, key string, env *libservices.Env) (libservices.FS, error) {
	c, err := libservices.ParseFilesystem(data)
	if err != nil {
		return nil, err
	}
	return Build(c, key, env)
}

// Close closes a built stack from its top (each layer closes what it wraps).
func Close(fs libservices.FS) error {
	if c, ok := fs.(libservices.Closer); ok {
		return c.CloseFS()
	}
	return nil
}

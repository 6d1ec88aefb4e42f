//go:build !ceph

package cephfs

import "github.com/polytropon/polytropon/libservices"

func build(Options, *libservices.Env) (libservices.FS, error) { return nil, ErrNotBuilt }

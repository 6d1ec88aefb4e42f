//go:build !ceph

package rbd

import "github.com/polytropon/polytropon/blockdev"

// Open is unavailable without -tags ceph,pacific.
func Open(Options) (blockdev.Device, error) { return nil, ErrNotBuilt }

// Create is unavailable without -tags ceph,pacific.
func Create(Options, int64) error { return ErrNotBuilt }

// Resize is unavailable without -tags ceph,pacific.
func Resize(Options, int64) error { return ErrNotBuilt }

// Remove is unavailable without -tags ceph,pacific.
func Remove(Options) error { return ErrNotBuilt }

package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// commit is set by the Makefile with -ldflags "-X main.commit=..." because builds
// with -buildvcs=false (or from a tarball) carry no VCS stamp in their build info.
var commit = ""

func init() { register(newVersionCmd) }

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the module version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionInfo()
			fmt.Fprintf(cmd.OutOrStdout(), "polytropon %s\ncommit: %s\ngo: %s\n", v.module, v.commit, v.goVersion)
			return nil
		},
	}
}

type version struct{ module, commit, goVersion string }

func versionInfo() version {
	v := version{module: "(devel)", commit: commit, goVersion: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.goVersion = bi.GoVersion
	if bi.Main.Version != "" {
		v.module = bi.Main.Version
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if v.commit == "" {
				v.commit = s.Value
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if v.commit == "" {
		v.commit = "unknown"
	} else if dirty {
		v.commit += "-dirty"
	}
	return v
}

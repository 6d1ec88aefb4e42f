package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/polytropon/polytropon/ipc/memcopy/tune"
)

func init() { registerUnder("perf", newPerfCopyCmd) }

func newPerfCopyCmd() *cobra.Command {
	var (
		rf          copyRunFlags
		profilePath string
		asJSON      bool
	)
	c := &cobra.Command{
		Use:   "copy",
		Short: "Memory copy throughput per kernel and size, and the tuned choice's speedup over copy()",
		Long: `perf copy measures GB/s for every copy kernel and size in the direct path's settings
(see tune copy), together with the tuned copier, and reports the tuned copier's speedup
over copy() measured in the same run. The profile is --profile, else the user's standard
profile, else one tuned in-process first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := rf.options(cmd.ErrOrStderr())
			p, source, from, err := tune.LoadOrTune(profilePath, opts)
			if err != nil {
				return fmt.Errorf("perf copy: %w", err)
			}
			if source == tune.SourceTuned {
				log.Info("no copy profile: tuned one in-process")
			} else {
				log.Info("measuring copy profile", zap.String("path", from))
			}
			rep, err := tune.Compare(p, opts)
			if err != nil {
				return fmt.Errorf("perf copy: %w", err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	rf.add(c)
	c.Flags().StringVar(&profilePath, "profile", "", "copy profile to measure (default: the user's standard profile, else tune first)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

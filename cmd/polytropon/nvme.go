package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/polytropon/polytropon/drivers/nvme"
)

func init() { register(newNVMeCmd) }

func newNVMeCmd() *cobra.Command {
	var s nvme.Sysfs
	cmd := &cobra.Command{
		Use:   "nvme",
		Short: "List NVMe controllers and hand them between the kernel and polytropon's VFIO driver",
		Long: `nvme lists the NVMe controllers on the PCI bus and binds a controller to vfio-pci
(so that pools drive it with polytropon's user-level driver, as nvme:PCIADDR) or gives
it back to the kernel's nvme driver. bind refuses a controller whose namespaces are
mounted, used as swap, held by a stacked device or open; unbind refuses one that a
process still drives through VFIO.`,
		Args: cobra.NoArgs,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&s.Root, "sysfs", "/sys", "where sysfs is mounted")
	pf.StringVar(&s.Proc, "proc", "/proc", "where procfs is mounted")
	_ = pf.MarkHidden("sysfs")
	_ = pf.MarkHidden("proc")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List NVMe controllers: PCI address, model, serial, bound driver, IOMMU group",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := s.List()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if cs == nil {
					cs = []nvme.Controller{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(cs)
			}
			if len(cs) == 0 {
				fmt.Fprintln(out, "no NVMe controllers")
				return nil
			}
			tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PCI ADDRESS\tMODEL\tSERIAL\tDRIVER\tIOMMU GROUP\tNAMESPACES")
			dash := func(s string) string {
				if s == "" {
					return "-"
				}
				return s
			}
			for _, c := range cs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Address, dash(c.Model), dash(c.Serial), dash(c.Driver),
					dash(c.IOMMUGroup), dash(strings.Join(c.Namespaces, ",")))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	bind := &cobra.Command{
		Use:   "bind PCIADDR",
		Short: "Hand a controller to vfio-pci for the user-level driver (refuses one in use)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := s.Bind(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s bound to vfio-pci; open it as nvme:%s\n", args[0], args[0])
			return nil
		},
	}
	unbind := &cobra.Command{
		Use:   "unbind PCIADDR",
		Short: "Give a controller back from vfio-pci to the kernel's nvme driver",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := s.Unbind(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s given back to the kernel\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(list, bind, unbind)
	return cmd
}

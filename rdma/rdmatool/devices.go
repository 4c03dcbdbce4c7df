package rdmatool

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/quartet-server/quartet/rdma"
)

// Devices lists the devices of the provider (or, for "auto", of every
// provider in the registry), with transport, ports and limits.
func Devices(ctx context.Context, provider string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("quartet rdma devices", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "show every limit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	reg := NewRegistry()
	names := []string{provider}
	if provider == "" || provider == "auto" {
		names = reg.Names()
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tDEVICE\tTRANSPORT\tPORTS\tADDRS\tMAX_QP\tMAX_QP_WR\tMAX_SGE\tMAX_MR_SIZE\tIRD/ORD\tCAPS")
	for _, name := range names {
		p, err := reg.Get(name)
		if err != nil {
			return err
		}
		devs, err := p.Devices()
		if err != nil {
			fmt.Fprintf(stderr, "quartet rdma devices: %s: %v\n", name, err)
			continue
		}
		for _, d := range devs {
			var ports []string
			for _, pt := range d.Ports {
				ports = append(ports, fmt.Sprintf("%d:%s/%s/mtu%d", pt.Num, pt.State, pt.LinkLayer, pt.MTU))
			}
			var addrs []string
			for _, a := range d.Addrs {
				addrs = append(addrs, a.String())
			}
			if len(addrs) == 0 {
				addrs = []string{"*"}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d/%d\t%s\n", d.Provider, d.Name, d.Transport,
				strings.Join(ports, ","), strings.Join(addrs, ","), d.MaxQP, d.MaxQPWR, d.MaxSGE, d.MaxMRSize,
				d.MaxQPRdAtom, d.MaxQPInitRdAtom, capsString(d.Caps))
			if *verbose {
				fmt.Fprintf(tw, "\t  guid=%016x fw=%q max_cq=%d max_cqe=%d max_mr=%d max_pd=%d max_mw=%d max_inline=%d\n",
					d.NodeGUID, d.FWVersion, d.MaxCQ, d.MaxCQE, d.MaxMR, d.MaxPD, d.MaxMW, d.MaxInlineData)
			}
		}
	}
	return tw.Flush()
}

func capsString(c rdma.Caps) string {
	var s []string
	for _, f := range []struct {
		c    rdma.Caps
		name string
	}{{rdma.CapMemoryWindows, "mw"}, {rdma.CapWriteImm, "write-imm"}, {rdma.CapSolicitedEvent, "solicited"}} {
		if c&f.c != 0 {
			s = append(s, f.name)
		}
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

// pwt-cnitool drives a conflist through the real libcni, the way a container runtime does.
//
//	pwt-cnitool add|check|del <conflist file> <netns path> <container id> [ifname]
//	pwt-cnitool version <plugin type>
//
// Environment: CNI_PATH (plugin directories, colon separated), CNI_CACHE_DIR (libcni's
// result cache, optional), CNI_ARGS (optional "K=V;K2=V2", passed as RuntimeConf.Args the
// way kubelet's runtimes pass K8S_POD_NAMESPACE and friends, as upstream cnitool does).
//
// On success ADD and VERSION print their result as JSON on stdout and everything exits 0.
// On failure stdout carries one JSON object {"code":N,"msg":...,"details":...} (code 0
// when the error did not come from a plugin) and the exit status is 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		var cniErr *types.Error
		out := map[string]interface{}{"code": 0, "msg": err.Error()}
		if errors.As(err, &cniErr) {
			out = map[string]interface{}{"code": cniErr.Code, "msg": cniErr.Msg, "details": cniErr.Details}
		}
		_ = json.NewEncoder(os.Stdout).Encode(out)
		fmt.Fprintf(os.Stderr, "pwt-cnitool: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: pwt-cnitool add|check|del CONFLIST NETNS CONTAINERID [IFNAME] | version TYPE")
	}
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	cni := libcni.NewCNIConfigWithCacheDir(paths, os.Getenv("CNI_CACHE_DIR"), nil)
	ctx := context.Background()

	if args[0] == "version" {
		if len(args) != 2 {
			return errors.New("usage: pwt-cnitool version TYPE")
		}
		info, err := cni.GetVersionInfo(ctx, args[1])
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{"supportedVersions": info.SupportedVersions()})
	}

	if len(args) < 4 || len(args) > 5 {
		return errors.New("usage: pwt-cnitool add|check|del CONFLIST NETNS CONTAINERID [IFNAME]")
	}
	list, err := libcni.ConfListFromFile(args[1])
	if err != nil {
		return err
	}
	rt := &libcni.RuntimeConf{ContainerID: args[3], NetNS: args[2], IfName: "eth0"}
	if len(args) == 5 {
		rt.IfName = args[4]
	}
	if raw := os.Getenv("CNI_ARGS"); raw != "" {
		// Runtimes always send IgnoreUnknown, since bridge and host-local refuse keys they
		// do not know (K8S_POD_NAME is podwall's, not theirs); add it unless given.
		if !strings.Contains(raw, "IgnoreUnknown=") {
			rt.Args = [][2]string{{"IgnoreUnknown", "1"}}
		}
		for _, pair := range strings.Split(raw, ";") {
			if pair == "" {
				continue
			}
			kv := strings.SplitN(pair, "=", 2)
			if len(kv) != 2 {
				return fmt.Errorf("CNI_ARGS entry %q is not KEY=VALUE", pair)
			}
			rt.Args = append(rt.Args, [2]string{kv[0], kv[1]})
		}
	}

	switch args[0] {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		return result.Print()
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
}

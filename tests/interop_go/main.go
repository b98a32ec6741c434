// nats.go, the reference Go client, as an independent Key-Value and Object Store client for
// natsop's interop tests. tests/test_interop_go.py builds it offline in GOPATH mode against Debian's
// packaged sources (golang-github-nats-io-go-nats-dev); by hand:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= CGO_ENABLED=0 go build -o /tmp/interop-go .
//
//	interop-go version                                    nats.go's version, and whether its ObjectMeta
//	                                                      has ADR-20's `metadata` (nats.go 1.22 has not)
//	interop-go kv create-bucket <bucket> [options-json]   {description, history, ttl_ms, max_bytes, max_value_size}
//	interop-go kv status <bucket>
//	interop-go kv get <bucket> <key> [revision]           null when absent; nats.go's Get hides DEL/PURGE markers
//	interop-go kv watch <bucket> [filter]                 the watch's initial entries: the latest of each key,
//	                                                      markers included
//	interop-go kv history <bucket> <key>                  markers included; [] when the key has none
//	interop-go kv keys <bucket> [filter]                  sorted; deleted keys left out
//	interop-go kv put|create <bucket> <key> <value>       the new revision
//	interop-go kv update <bucket> <key> <value> <revision>
//	interop-go kv delete|purge <bucket> <key>
//
//	interop-go obj create <bucket> [options-json]         {description, ttl_ms, max_bytes}
//	interop-go obj status <bucket>
//	interop-go obj info <bucket> <name>                   null when absent; deleted objects are shown
//	interop-go obj list <bucket>                          live objects; [] when none
//	interop-go obj get <bucket> <name> [out-file]         size and sha256 (hex) of what was read (nats.go
//	                                                      checks the digest at the end); null when absent
//	interop-go obj put <bucket> <file> <meta-json>        meta: {name, description, headers: {K: [v, ...]},
//	                                                      max_chunk_size}
//	interop-go obj delete <bucket> <name>
//	interop-go obj link <bucket> <name> <target-bucket> [target-name]   no target-name: a link to the bucket
//
// Values are UTF-8 text on the command line; entries print both the text and base64.
// Connection: NATS_URL, NATS_USER, NATS_PASSWORD from the environment, never argv.
// Output: {"ok": true, "result": ...} and exit 0, or {"ok": false, "error": {...}} and exit 3.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

const wait = 30 * time.Second

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usage(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func need(args []string, names ...string) error {
	if len(args) < len(names) {
		return usage("missing argument <%s>", names[len(args)])
	}
	return nil
}

func arg(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

func parseJSON(text, what string, into any) error {
	if text == "" {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields() // a field this program does not pass on is an error, not silently dropped
	if err := dec.Decode(into); err != nil {
		return usage("%s is not the expected JSON: %v", what, err)
	}
	return nil
}

func parseRevision(text string) (uint64, error) {
	n, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return 0, usage("revision must be an unsigned integer, not %q", text)
	}
	return n, nil
}

// ---------------------------------------------------------------------------------------- KV

type plainEntry struct {
	Bucket    string `json:"bucket"`
	Key       string `json:"key"`
	Revision  uint64 `json:"revision"`
	Operation string `json:"operation"`
	Delta     uint64 `json:"delta"`
	Created   string `json:"created"`
	Length    int    `json:"length"`
	Value     string `json:"value"`
	ValueB64  string `json:"value_b64"`
}

func opName(op nats.KeyValueOp) string {
	switch op {
	case nats.KeyValuePut:
		return "PUT"
	case nats.KeyValueDelete:
		return "DEL"
	case nats.KeyValuePurge:
		return "PURGE"
	}
	return op.String()
}

func entryOf(e nats.KeyValueEntry) plainEntry {
	return plainEntry{
		Bucket: e.Bucket(), Key: e.Key(), Revision: e.Revision(), Operation: opName(e.Operation()),
		Delta: e.Delta(), Created: e.Created().UTC().Format(time.RFC3339Nano), Length: len(e.Value()),
		Value: string(e.Value()), ValueB64: base64.StdEncoding.EncodeToString(e.Value()),
	}
}

func kvStatus(kv nats.KeyValue) (any, error) {
	st, err := kv.Status()
	if err != nil {
		return nil, err
	}
	bst := st.(*nats.KeyValueBucketStatus)
	cfg := bst.StreamInfo().Config
	return map[string]any{
		"bucket": st.Bucket(), "description": cfg.Description, "history": st.History(),
		"ttl_ms": st.TTL().Milliseconds(), "max_bytes": cfg.MaxBytes, "max_value_size": cfg.MaxMsgSize,
		"storage": cfg.Storage.String(), "replicas": cfg.Replicas, "values": st.Values(), "bytes": bst.Bytes(),
		"stream": cfg.Name, "allow_direct": cfg.AllowDirect,
	}, nil
}

// initial collects a watcher's initial entries, up to the nil that ends them.
func initial(w nats.KeyWatcher) []plainEntry {
	defer w.Stop()
	out := []plainEntry{}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		out = append(out, entryOf(e))
	}
	return out
}

func kvCommand(js nats.JetStreamContext, cmd string, args []string) (any, error) {
	if err := need(args, "bucket"); err != nil {
		return nil, err
	}
	bucket := args[0]
	if cmd == "create-bucket" {
		var o struct {
			Description  string `json:"description"`
			History      uint8  `json:"history"`
			TTLms        int64  `json:"ttl_ms"`
			MaxBytes     int64  `json:"max_bytes"`
			MaxValueSize int32  `json:"max_value_size"`
		}
		if err := parseJSON(arg(args, 1), "options", &o); err != nil {
			return nil, err
		}
		kv, err := js.CreateKeyValue(&nats.KeyValueConfig{
			Bucket: bucket, Description: o.Description, History: o.History,
			TTL: time.Duration(o.TTLms) * time.Millisecond, MaxBytes: o.MaxBytes, MaxValueSize: o.MaxValueSize,
		})
		if err != nil {
			return nil, err
		}
		return kvStatus(kv)
	}
	kv, err := js.KeyValue(bucket)
	if err != nil {
		return nil, err
	}
	switch cmd {
	case "status":
		return kvStatus(kv)
	case "get":
		if err := need(args, "bucket", "key"); err != nil {
			return nil, err
		}
		var e nats.KeyValueEntry
		if len(args) > 2 {
			rev, err := parseRevision(args[2])
			if err != nil {
				return nil, err
			}
			e, err = kv.GetRevision(args[1], rev)
			if errors.Is(err, nats.ErrKeyNotFound) {
				return nil, nil
			} else if err != nil {
				return nil, err
			}
		} else {
			e, err = kv.Get(args[1])
			if errors.Is(err, nats.ErrKeyNotFound) {
				return nil, nil
			} else if err != nil {
				return nil, err
			}
		}
		return entryOf(e), nil
	case "watch":
		filter := arg(args, 1)
		if filter == "" {
			filter = nats.AllKeys
		}
		w, err := kv.Watch(filter)
		if err != nil {
			return nil, err
		}
		return initial(w), nil
	case "history":
		if err := need(args, "bucket", "key"); err != nil {
			return nil, err
		}
		entries, err := kv.History(args[1])
		if errors.Is(err, nats.ErrKeyNotFound) {
			return []plainEntry{}, nil
		} else if err != nil {
			return nil, err
		}
		out := make([]plainEntry, 0, len(entries))
		for _, e := range entries {
			out = append(out, entryOf(e))
		}
		return out, nil
	case "keys":
		// nats.go 1.22's Keys() takes no filter; a filtered listing is its meta-only watch, as Keys() does.
		filter := arg(args, 1)
		if filter == "" {
			filter = nats.AllKeys
		}
		w, err := kv.Watch(filter, nats.IgnoreDeletes(), nats.MetaOnly())
		if err != nil {
			return nil, err
		}
		keys := []string{}
		for _, e := range initial(w) {
			keys = append(keys, e.Key)
		}
		sort.Strings(keys)
		return keys, nil
	case "put", "create":
		if err := need(args, "bucket", "key", "value"); err != nil {
			return nil, err
		}
		if cmd == "put" {
			return kv.Put(args[1], []byte(args[2]))
		}
		return kv.Create(args[1], []byte(args[2]))
	case "update":
		if err := need(args, "bucket", "key", "value", "revision"); err != nil {
			return nil, err
		}
		rev, err := parseRevision(args[3])
		if err != nil {
			return nil, err
		}
		return kv.Update(args[1], []byte(args[2]), rev)
	case "delete", "purge":
		if err := need(args, "bucket", "key"); err != nil {
			return nil, err
		}
		if cmd == "delete" {
			return nil, kv.Delete(args[1])
		}
		return nil, kv.Purge(args[1])
	}
	return nil, usage("unknown kv command %q", cmd)
}

// ---------------------------------------------------------------------------------------- Object Store

// plainInfo is the metadata record as nats.go decoded it, re-encoded by nats.go's own JSON tags (so
// a field this nats.go does not know, such as ADR-20's later `metadata`, is absent), plus is_link.
func plainInfo(info *nats.ObjectInfo) (map[string]any, error) {
	raw, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	out["is_link"] = info.Opts != nil && info.Opts.Link != nil
	out["deleted"] = info.Deleted // omitempty in nats.go's tags; always present here
	return out, nil
}

func objStatus(obs nats.ObjectStore) (any, error) {
	st, err := obs.Status()
	if err != nil {
		return nil, err
	}
	cfg := st.(*nats.ObjectBucketStatus).StreamInfo().Config
	return map[string]any{
		"bucket": st.Bucket(), "description": st.Description(), "ttl_ms": st.TTL().Milliseconds(),
		"storage": st.Storage().String(), "replicas": st.Replicas(), "sealed": st.Sealed(), "size": st.Size(),
		"max_bytes": cfg.MaxBytes, "stream": cfg.Name, "allow_direct": cfg.AllowDirect,
	}, nil
}

func objGet(obs nats.ObjectStore, name, outFile string) (any, error) {
	// With a context, nats.go's reader waits for slow chunks instead of failing after 2 s.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	got, err := obs.Get(name, nats.Context(ctx))
	if errors.Is(err, nats.ErrObjectNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer got.Close()
	sink := io.Writer(io.Discard)
	if outFile != "" {
		f, err := os.Create(outFile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		sink = f
	}
	sha := sha256.New()
	// nats.go compares the digest when the data ends: a mismatch is the error of the last Read.
	size, err := io.Copy(io.MultiWriter(sink, sha), got)
	if err != nil {
		return nil, err
	}
	info, err := got.Info()
	if err != nil {
		return nil, err
	}
	plain, err := plainInfo(info)
	if err != nil {
		return nil, err
	}
	return map[string]any{"info": plain, "size": size, "sha256": hex.EncodeToString(sha.Sum(nil))}, nil
}

func objCommand(js nats.JetStreamContext, cmd string, args []string) (any, error) {
	if err := need(args, "bucket"); err != nil {
		return nil, err
	}
	bucket := args[0]
	if cmd == "create" {
		var o struct {
			Description string `json:"description"`
			TTLms       int64  `json:"ttl_ms"`
			MaxBytes    int64  `json:"max_bytes"`
		}
		if err := parseJSON(arg(args, 1), "options", &o); err != nil {
			return nil, err
		}
		obs, err := js.CreateObjectStore(&nats.ObjectStoreConfig{
			Bucket: bucket, Description: o.Description, TTL: time.Duration(o.TTLms) * time.Millisecond,
			MaxBytes: o.MaxBytes,
		})
		if err != nil {
			return nil, err
		}
		return objStatus(obs)
	}
	obs, err := js.ObjectStore(bucket)
	if err != nil {
		return nil, err
	}
	switch cmd {
	case "status":
		return objStatus(obs)
	case "info":
		if err := need(args, "bucket", "name"); err != nil {
			return nil, err
		}
		info, err := obs.GetInfo(args[1], nats.GetObjectInfoShowDeleted())
		if errors.Is(err, nats.ErrObjectNotFound) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
		return plainInfo(info)
	case "list":
		infos, err := obs.List()
		if errors.Is(err, nats.ErrNoObjectsFound) {
			return []any{}, nil
		} else if err != nil {
			return nil, err
		}
		out := make([]any, 0, len(infos))
		for _, info := range infos {
			plain, err := plainInfo(info)
			if err != nil {
				return nil, err
			}
			out = append(out, plain)
		}
		return out, nil
	case "get":
		if err := need(args, "bucket", "name"); err != nil {
			return nil, err
		}
		return objGet(obs, args[1], arg(args, 2))
	case "put":
		if err := need(args, "bucket", "file", "meta-json"); err != nil {
			return nil, err
		}
		var m struct {
			Name         string              `json:"name"`
			Description  string              `json:"description"`
			Headers      map[string][]string `json:"headers"`
			MaxChunkSize uint32              `json:"max_chunk_size"`
		}
		if err := parseJSON(args[2], "meta", &m); err != nil {
			return nil, err
		}
		meta := &nats.ObjectMeta{Name: m.Name, Description: m.Description}
		if m.Headers != nil {
			meta.Headers = nats.Header(m.Headers)
		}
		if m.MaxChunkSize > 0 {
			meta.Opts = &nats.ObjectMetaOptions{ChunkSize: m.MaxChunkSize}
		}
		f, err := os.Open(args[1])
		if err != nil {
			return nil, err
		}
		defer f.Close()
		info, err := obs.Put(meta, f)
		if err != nil {
			return nil, err
		}
		return plainInfo(info)
	case "delete":
		if err := need(args, "bucket", "name"); err != nil {
			return nil, err
		}
		return nil, obs.Delete(args[1])
	case "link":
		if err := need(args, "bucket", "name", "target-bucket"); err != nil {
			return nil, err
		}
		target, err := js.ObjectStore(args[2])
		if err != nil {
			return nil, err
		}
		var info *nats.ObjectInfo
		if targetName := arg(args, 3); targetName == "" {
			info, err = obs.AddBucketLink(args[1], target)
		} else {
			var obj *nats.ObjectInfo
			if obj, err = target.GetInfo(targetName); err == nil {
				info, err = obs.AddLink(args[1], obj)
			}
		}
		if err != nil {
			return nil, err
		}
		return plainInfo(info)
	}
	return nil, usage("unknown obj command %q", cmd)
}

// ---------------------------------------------------------------------------------------- main

// sentinels names nats.go's errors that the tests tell apart.
var sentinels = []struct {
	err  error
	name string
}{
	{nats.ErrDigestMismatch, "ErrDigestMismatch"},
	{nats.ErrInvalidDigestFormat, "ErrInvalidDigestFormat"},
	{nats.ErrBadObjectMeta, "ErrBadObjectMeta"},
	{nats.ErrObjectNotFound, "ErrObjectNotFound"},
	{nats.ErrObjectAlreadyExists, "ErrObjectAlreadyExists"},
	{nats.ErrKeyExists, "ErrKeyExists"},
	{nats.ErrKeyNotFound, "ErrKeyNotFound"},
	{nats.ErrBucketNotFound, "ErrBucketNotFound"},
	{nats.ErrStreamNotFound, "ErrStreamNotFound"},
}

func describe(err error) map[string]any {
	out := map[string]any{"name": fmt.Sprintf("%T", err), "message": err.Error()}
	var u *usageError
	if errors.As(err, &u) {
		out["name"] = "Usage"
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			out["name"] = s.name
			break
		}
	}
	var jsErr nats.JetStreamError
	if errors.As(err, &jsErr) && jsErr.APIError() != nil {
		api := jsErr.APIError()
		out["code"] = int(api.ErrorCode) // the API's err_code
		out["status"] = api.Code         // its HTTP-like code
		out["description"] = api.Description
	}
	return out
}

func emit(doc map[string]any) {
	raw, err := json.Marshal(doc)
	if err != nil {
		raw, _ = json.Marshal(map[string]any{"ok": false, "error": map[string]any{
			"name": "Output", "message": err.Error()}})
	}
	os.Stdout.Write(append(raw, '\n'))
}

func run(args []string) (any, error) {
	if len(args) >= 1 && args[0] == "version" {
		_, hasMetadata := reflect.TypeOf(nats.ObjectMeta{}).FieldByName("Metadata")
		return map[string]any{"version": nats.Version, "object_metadata": hasMetadata}, nil
	}
	if len(args) < 2 || (args[0] != "kv" && args[0] != "obj") {
		return nil, usage("usage: interop-go version | kv <command> ... | obj <command> ...")
	}
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	opts := []nats.Option{nats.Name("natsop-interop-go"), nats.Timeout(wait)}
	if user := os.Getenv("NATS_USER"); user != "" {
		opts = append(opts, nats.UserInfo(user, os.Getenv("NATS_PASSWORD")))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := nc.JetStream(nats.MaxWait(wait))
	if err != nil {
		return nil, err
	}
	if args[0] == "kv" {
		return kvCommand(js, args[1], args[2:])
	}
	return objCommand(js, args[1], args[2:])
}

func main() {
	result, err := run(os.Args[1:])
	if err != nil {
		emit(map[string]any{"ok": false, "error": describe(err)})
		os.Exit(3)
	}
	emit(map[string]any{"ok": true, "result": result})
}

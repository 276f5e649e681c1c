package steps

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"go.yaml.in/yaml/v3"
)

type imageUpdate struct {
	// Image is the repository of the freight's image.
	Image string `json:"image" step:"required"`
	// Name is the image's name in the kustomization; Image when empty.
	Name    string `json:"name"`
	NewName string `json:"newName"`
	Tag     string `json:"tag"`
	Digest  string `json:"digest"`
	// UseDigest and FromOrigin (Caravan's, as Kargo's before it had
	// expressions) apply to an image with neither tag nor digest, which
	// takes the freight's: its digest with UseDigest, from the freight of
	// FromOrigin when set.
	UseDigest  bool    `json:"useDigest"`
	FromOrigin *origin `json:"fromOrigin"`
}

type kustomizeSetImageConfig struct {
	// Path is the kustomization's directory; the work dir when empty.
	Path   string        `json:"path"`
	Images []imageUpdate `json:"images"`
}

// kustomizeImage is one entry of a kustomization's images.
type kustomizeImage struct {
	name, newName, newTag, digest string
}

func (i kustomizeImage) ref() string {
	ref := i.name
	if i.newName != "" {
		ref = i.newName
	}
	if i.newTag != "" {
		ref += ":" + i.newTag
	}
	if i.digest != "" {
		ref += "@" + i.digest
	}
	return ref
}

// fields are the entry's keys and values, in kustomize's order.
func (i kustomizeImage) fields() [][2]string {
	f := [][2]string{{"name", i.name}}
	for _, kv := range [][2]string{{"newName", i.newName}, {"newTag", i.newTag}, {"digest", i.digest}} {
		if kv[1] != "" {
			f = append(f, kv)
		}
	}
	return f
}

// kustomizeSetImage sets images in a kustomization, as `kustomize edit set
// image` does: each image's entry holds the new name, tag or digest. With
// no images configured, every image of the freight is set (tag and
// digest), as Kargo does. Entries are edited in place; new ones are added
// at the end of the list. Output: commitMessage.
func kustomizeSetImage(_ context.Context, sc *Context, cfg *kustomizeSetImageConfig) (Result, error) {
	if cfg.Path == "" {
		cfg.Path = "."
	}
	if err := sc.checkPath(cfg.Path); err != nil {
		return Result{}, err
	}
	// The file is found as it is (a link too), then read and written
	// through the work dir: a link leading out of it is an error.
	var found []string
	for _, name := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if p := filepath.Join(cfg.Path, name); sc.Workspace.Dir.Exists(p) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return Result{}, Terminal(fmt.Errorf("no kustomization file in %s", cfg.Path))
	case 1:
	default:
		return Result{}, Terminal(fmt.Errorf("%s holds several kustomization files: %s", cfg.Path, strings.Join(found, ", ")))
	}
	file := found[0]
	targets, err := imageTargets(sc.Freight, cfg.Images)
	if err != nil {
		return Result{}, err
	}
	b, err := sc.readFile(file)
	if err != nil {
		return Result{}, err
	}
	for _, t := range targets {
		if b, err = setKustomizationImage(b, t); err != nil {
			return Result{}, Terminal(fmt.Errorf("%s: image %s: %w", file, t.name, err))
		}
	}
	if err := sc.writeFile(file, b); err != nil {
		return Result{}, err
	}
	if len(targets) == 0 {
		return Result{}, nil
	}
	msg := fmt.Sprintf("Updated %s to use new image", cfg.Path)
	if len(targets) > 1 {
		msg += "s"
	}
	msg += "\n"
	for _, t := range targets {
		msg += "\n- " + t.ref()
	}
	return Result{Output: map[string]any{"commitMessage": msg}}, nil
}

// imageTargets are the entries to set, sorted by name.
func imageTargets(freight []model.FreightReference, images []imageUpdate) ([]kustomizeImage, error) {
	byName := map[string]kustomizeImage{}
	if len(images) == 0 {
		from := map[string]string{}
		for _, f := range freight {
			for _, img := range f.Images {
				if other, dup := from[img.RepoURL]; dup && other != f.Name {
					return nil, Terminal(fmt.Errorf("image %s is in freight %s and %s: list the images to set", img.RepoURL, other, f.Name))
				}
				from[img.RepoURL] = f.Name
				byName[img.RepoURL] = kustomizeImage{name: img.RepoURL, newTag: img.Tag, digest: img.Digest}
			}
		}
	}
	for i, u := range images {
		if u.Tag != "" && u.Digest != "" {
			return nil, Terminal(fmt.Errorf("images[%d]: tag and digest are mutually exclusive", i))
		}
		if u.Tag == "" && u.Digest == "" {
			img, ok := imageFromFreight(freight, u)
			if !ok {
				return nil, Terminal(fmt.Errorf("images[%d]: no tag or digest given and no image %s in the freight", i, u.Image))
			}
			if u.UseDigest {
				u.Digest = img.Digest
			} else {
				u.Tag = img.Tag
			}
		}
		t := kustomizeImage{name: u.Image, newName: u.NewName, newTag: u.Tag, digest: u.Digest}
		if u.Name != "" {
			t.name = u.Name
		}
		byName[t.name] = t
	}
	out := make([]kustomizeImage, 0, len(byName))
	for _, t := range byName {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b kustomizeImage) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

func imageFromFreight(freight []model.FreightReference, u imageUpdate) (model.Image, bool) {
	for _, f := range freight {
		if u.FromOrigin != nil && (string(f.Origin.Kind) != u.FromOrigin.Kind || f.Origin.Name != u.FromOrigin.Name) {
			continue
		}
		for _, img := range f.Images {
			if img.RepoURL == u.Image {
				return img, true
			}
		}
	}
	return model.Image{}, false
}

// setKustomizationImage sets the entry t in a kustomization's images, in
// place: an entry with the same keys has its values changed, one with
// other keys is rewritten, a new one is added after the last.
func setKustomizationImage(doc []byte, t kustomizeImage) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, err
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the kustomization is not a mapping")
	}
	src := yamlSource{doc: doc, lines: lineStarts(doc)}
	top := root.Content[0]
	images := mappingValue(top, "images")
	if images == nil || (images.Kind == yaml.ScalarNode && images.Tag == "!!null") {
		return addImages(src, top, images, t)
	}
	if images.Kind != yaml.SequenceNode || images.Style&yaml.FlowStyle != 0 {
		return nil, fmt.Errorf("images is not a block list")
	}
	for i, e := range images.Content {
		if e.Kind != yaml.MappingNode {
			continue
		}
		if n := mappingValue(e, "name"); n == nil || n.Value != t.name {
			continue
		}
		var have []string
		for j := 0; j+1 < len(e.Content); j += 2 {
			have = append(have, e.Content[j].Value)
		}
		var want []string
		for _, kv := range t.fields() {
			want = append(want, kv[0])
		}
		slices.Sort(have)
		slices.Sort(want)
		if slices.Equal(have, want) {
			for _, kv := range t.fields()[1:] {
				if v := mappingValue(e, kv[0]); v != nil && v.Value == kv[1] {
					continue
				}
				var err error
				if doc, err = setYAML(doc, fmt.Sprintf("images.%d.%s", i, kv[0]), kv[1]); err != nil {
					return nil, err
				}
			}
			return doc, nil
		}
		return src.rewriteItem(e, t)
	}
	at, err := src.nodeEnd(images)
	if err != nil {
		return nil, err
	}
	first := images.Content[0]
	dash := src.dashColumn(first)
	return splice(doc, at, at, imageItem(t, dash, first.Column-1-dash)), nil
}

// addImages adds an images list holding t to the kustomization top (after
// its null images key, or at its end), its items indented as the file's
// other lists.
func addImages(src yamlSource, top, null *yaml.Node, t kustomizeImage) ([]byte, error) {
	keyIndent := 0
	if len(top.Content) > 0 {
		keyIndent = top.Content[0].Column - 1
	}
	itemIndent := keyIndent
	for j := 1; j < len(top.Content); j += 2 {
		if s := top.Content[j]; s.Kind == yaml.SequenceNode && s.Style&yaml.FlowStyle == 0 && len(s.Content) > 0 {
			itemIndent = src.dashColumn(s.Content[0])
			break
		}
	}
	item := imageItem(t, itemIndent, 2)
	if null != nil {
		// `images:` with nothing after it: the list goes below the key.
		for j := 0; j+1 < len(top.Content); j += 2 {
			if top.Content[j+1] == null {
				k := top.Content[j]
				end := src.lineEnd(src.offset(k.Line, k.Column))
				return splice(src.doc, end, end, "\n"+strings.TrimSuffix(item, "\n")), nil
			}
		}
	}
	at := len(src.doc)
	prefix := ""
	if at > 0 && src.doc[at-1] != '\n' {
		prefix = "\n"
	}
	return splice(src.doc, at, at, prefix+strings.Repeat(" ", keyIndent)+"images:\n"+item), nil
}

// dashColumn is the column (0-based) of the "- " before the block
// sequence item n.
func (s yamlSource) dashColumn(n *yaml.Node) int {
	off := s.offset(n.Line, n.Column)
	for i := off - 1; i >= 0 && s.doc[i] != '\n'; i-- {
		if s.doc[i] == '-' {
			return i - (lineStartOf(s.doc, i))
		}
	}
	return n.Column - 1
}

// lineStartOf is the offset of the start of the line holding offset i.
func lineStartOf(doc []byte, i int) int {
	for j := i; j > 0; j-- {
		if doc[j-1] == '\n' {
			return j
		}
	}
	return 0
}

// rewriteItem replaces the list item e (a mapping) with t.
func (s yamlSource) rewriteItem(e *yaml.Node, t kustomizeImage) ([]byte, error) {
	dash := s.dashColumn(e)
	first := s.offset(e.Line, e.Column)
	start := lineStartOf(s.doc, first)
	end, err := s.nodeEnd(e)
	if err != nil {
		return nil, err
	}
	return splice(s.doc, start, end, imageItem(t, dash, e.Column-1-dash)), nil
}

// imageItem renders t as a list item: the dash at column dash, the keys
// gap columns after it.
func imageItem(t kustomizeImage, dash, gap int) string {
	if gap < 1 {
		gap = 2
	}
	var b strings.Builder
	for i, kv := range t.fields() {
		v, _ := yamlScalar(kv[1], 0)
		if i == 0 {
			b.WriteString(strings.Repeat(" ", dash) + "-" + strings.Repeat(" ", gap-1))
		} else {
			b.WriteString(strings.Repeat(" ", dash+gap))
		}
		b.WriteString(kv[0] + ": " + v + "\n")
	}
	return b.String()
}

func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

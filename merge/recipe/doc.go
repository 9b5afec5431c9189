// Package recipe runs mergekit-style recipes: YAML files that say which models to
// merge, by which method, with which parameters, and pipelines of several such
// merges where a later step uses an earlier step's output.
//
// A recipe is mergekit's configuration format: merge_method, base_model, models
// (each a model and its parameters) or slices (sources with layer ranges),
// parameters at the top, per model and per slice, dtype, out_dtype,
// tokenizer_source and chat_template. A parameter is a number, a gradient (a list
// of numbers spread evenly over a slice's layers and interpolated linearly; the
// embeddings, final norm and head take the first value), or a list of
// filter/value entries matched by substring against the tensor's name, the first
// match winning. Model references are local paths.
//
// A pipeline is mergekit-multi's format: several YAML documents separated by ---,
// each a recipe with a name; a model reference that is an earlier step's name means
// that step's output. One document may lack a name: it is the final merge, written
// to the command's --out. gomerge adds `out:` to say where a named step writes;
// otherwise it writes to --intermediate-dir/NAME.
//
// Parsing checks everything that can be checked without the models: known keys,
// methods and parameters, value types and ranges, step names and their dependency
// order. Planning opens the models' headers and checks the rest (layer ranges,
// missing defaults) for every step before any step runs. Every mistake is an
// *Error that names the file and line and is a merge.ErrBadInput.
//
// The merge itself is merge.RunMethod (or merge.RunSFA), with per-tensor parameters
// through merge.MethodJob.TensorParams when filters or gradients make them vary,
// and, for slices that renumber layers, views that present the chosen layers of
// several checkpoints as one (merge.Job.Open).
package recipe

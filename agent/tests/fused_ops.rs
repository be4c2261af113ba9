//! The fused CPU kernels (agent/csrc/fused_ops.cpp) against the composite libtorch form:
//! values and gradients within 1e-5 of the largest entry, for the shapes the models use and
//! for awkward ones (a width that is not a multiple of 8, non-contiguous input, rows that do not
//! fill the last parallel task).

use agent::{fused_ops, rms_norm_composite, rotary_composite};
use tch::{Device, Kind, Tensor};

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// Largest difference relative to the largest entry of `b`.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs(&(a - b)) / max_abs(b).max(1e-12)
}

/// (output, dL/dx, dL/dw) for L = sum(y * probe).
fn run(
    norm: impl Fn(&Tensor, &Tensor) -> Tensor,
    x: &Tensor,
    w: &Tensor,
    probe: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let x = x.detach().copy().set_requires_grad(true);
    let w = w.detach().copy().set_requires_grad(true);
    let y = norm(&x, &w);
    (&y * probe).sum(Kind::Float).backward();
    (y.detach(), x.grad(), w.grad())
}

fn check(shape: &[i64], transpose_input: bool, seed: i64) {
    tch::manual_seed(seed);
    let d = *shape.last().unwrap();
    let x = if transpose_input {
        // Same values, laid out [.., D, T] and transposed back: a non-contiguous view.
        let mut t_shape = shape.to_vec();
        let n = t_shape.len();
        t_shape.swap(n - 1, n - 2);
        Tensor::randn(t_shape.as_slice(), (Kind::Float, Device::Cpu)).transpose(-1, -2)
    } else {
        Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 3.0
    };
    let w = Tensor::randn([d], (Kind::Float, Device::Cpu)) + 1.0;
    let probe = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let fused =
        |x: &Tensor, w: &Tensor| fused_ops::rms_norm(x, w, 1e-6).expect("applies to f32 CPU");
    let (y_f, dx_f, dw_f) = run(fused, &x, &w, &probe);
    let (y_c, dx_c, dw_c) = run(rms_norm_composite, &x, &w, &probe);
    assert_eq!(y_f.size(), y_c.size());
    for (name, a, b) in [
        ("y", &y_f, &y_c),
        ("dx", &dx_f, &dx_c),
        ("dw", &dw_f, &dw_c),
    ] {
        let diff = rel_diff(a, b);
        assert!(
            diff < 1e-5,
            "{shape:?} transpose {transpose_input}: {name} differs by {diff:e}"
        );
    }
}

#[test]
fn fused_rms_norm_equals_the_composite_form_in_value_and_gradient() {
    check(&[5, 64], false, 0);
    check(&[3, 101, 64], false, 1); // DPT's sequences
    check(&[2, 700, 256], false, 2); // several parallel tasks, the last one partial
    check(&[4, 9, 33], false, 3); // width not a multiple of 8
    check(&[6, 40, 64], true, 4); // non-contiguous input
    check(&[1, 1, 8], false, 5);
}

#[test]
fn fused_rms_norm_leaves_other_dtypes_to_the_composite_form() {
    let x = Tensor::randn([4, 64], (Kind::BFloat16, Device::Cpu));
    let w = Tensor::ones([64], (Kind::BFloat16, Device::Cpu));
    assert!(fused_ops::rms_norm(&x, &w, 1e-6).is_none());
    let xd = Tensor::randn([4, 64], (Kind::Double, Device::Cpu));
    let wd = Tensor::ones([64], (Kind::Double, Device::Cpu));
    assert!(fused_ops::rms_norm(&xd, &wd, 1e-6).is_none());
}

#[test]
fn fused_rms_norm_matches_with_several_libtorch_threads() {
    let before = tch::get_num_threads();
    tch::set_num_threads(2);
    check(&[8, 512, 64], false, 7);
    tch::set_num_threads(before);
}

/// Tables as `Rotary::new` builds them: cos/sin `[Bt, 1, T, hd/2]` of integer positions.
fn tables(batch: i64, t: i64, hd: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let pos = Tensor::randint(4096, [batch, t], (Kind::Int64, Device::Cpu)).to_kind(Kind::Double);
    let inv_freq = (Tensor::arange(hd / 2, (Kind::Double, Device::Cpu))
        * (-2.0 * 10000f64.ln() / hd as f64))
        .exp();
    let angles = pos.unsqueeze(-1) * inv_freq;
    let table = |a: Tensor| a.to_kind(Kind::Float).unsqueeze(1);
    (table(angles.cos()), table(angles.sin()))
}

fn check_rotary(b: i64, h: i64, t: i64, hd: i64, table_batch: i64, transposed: bool, seed: i64) {
    let (cos, sin) = tables(table_batch, t, hd, seed);
    // q and k arrive as `[B, T, H, hd]` projections viewed as `[B, H, T, hd]`.
    let x = if transposed {
        Tensor::randn([b, t, h, hd], (Kind::Float, Device::Cpu)).transpose(1, 2)
    } else {
        Tensor::randn([b, h, t, hd], (Kind::Float, Device::Cpu))
    };
    let probe = Tensor::randn([b, h, t, hd], (Kind::Float, Device::Cpu));
    let grads = |f: &dyn Fn(&Tensor) -> Tensor| {
        let x = x.detach().copy().set_requires_grad(true);
        let y = f(&x);
        (&y * &probe).sum(Kind::Float).backward();
        (y.detach(), x.grad())
    };
    let (y_f, dx_f) = grads(&|x| fused_ops::rotary(x, &cos, &sin).expect("applies to f32 CPU"));
    let (y_c, dx_c) = grads(&|x| rotary_composite(x, &cos, &sin));
    assert_eq!(y_f.size(), vec![b, h, t, hd]);
    // The forward is the same arithmetic in the same order: equal bit for bit.
    assert_eq!(
        max_abs(&(&y_f - &y_c)),
        0.0,
        "rotary forward [{b},{h},{t},{hd}]"
    );
    let diff = rel_diff(&dx_f, &dx_c);
    assert!(
        diff < 1e-6,
        "rotary gradient [{b},{h},{t},{hd}] differs by {diff:e}"
    );
}

#[test]
fn fused_rotary_equals_the_composite_form_in_value_and_gradient() {
    check_rotary(3, 2, 37, 32, 3, true, 0); // the make-run model's q/k layout
    check_rotary(2, 8, 300, 8, 2, false, 1); // 8 heads of 8, several parallel tasks
    check_rotary(4, 4, 1, 16, 1, true, 2); // one decode token, tables broadcast over the batch
    check_rotary(1, 1, 5, 2, 1, false, 3);
}

#[test]
fn fused_rotary_leaves_other_cases_to_the_composite_form() {
    let (cos, sin) = tables(2, 5, 8, 0);
    let x = Tensor::randn([2, 3, 5, 8], (Kind::Double, Device::Cpu));
    assert!(
        fused_ops::rotary(&x, &cos.to_kind(Kind::Double), &sin.to_kind(Kind::Double)).is_none()
    );
    let wrong_t = Tensor::randn([2, 3, 6, 8], (Kind::Float, Device::Cpu));
    assert!(fused_ops::rotary(&wrong_t, &cos, &sin).is_none());
    let learned = cos.copy().set_requires_grad(true);
    let x = Tensor::randn([2, 3, 5, 8], (Kind::Float, Device::Cpu));
    assert!(fused_ops::rotary(&x, &learned, &sin).is_none());
}

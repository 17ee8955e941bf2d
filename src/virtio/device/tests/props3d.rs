//! Property test: random 3D and 2D command sequences through a real control queue, with the
//! fake renderer failing calls and retiring fences at random, against the device's invariants.

use super::fake3d::{Failure, Fake3d, Method};
use super::props::{Op, PROP_MAX_MEM, RESPONSE_TYPES, entry, fill_guest_memory, id, leaf_op, prop_gpu};
use super::three_d::{
    TEXTURE_2D, cmd_create_3d, cmd_ctx_create, cmd_ctx_destroy, cmd_ctx_res, cmd_submit, cmd_transfer_3d, fenced,
};
#[allow(clippy::wildcard_imports)]
use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// One step: a command sent as a chain, or something done to the fake or the device.
#[derive(Clone, Debug)]
enum Step {
    /// A 2D (or malformed) command of the 2D property tests.
    TwoD(Op),
    CtxCreate {
        ctx: u32,
        capset: u32,
    },
    CtxDestroy(u32),
    CtxRes {
        ctx: u32,
        res: u32,
        attach: bool,
    },
    Create3d {
        id: u32,
        target: u32,
        w: u32,
        h: u32,
        depth: u32,
    },
    Transfer {
        id: u32,
        ctx: u32,
        offset: u64,
        to_host: bool,
    },
    Submit {
        ctx: u32,
        dwords: usize,
        size: Option<u32>,
    },
    /// The command of a step above, fenced with this id, on this ring.
    Fenced(Box<Step>, u64, Option<u8>),
    /// The fake fails the next call of a method.
    Fail(Method, Failure),
    /// The fake retires its oldest fences; the device is told.
    Retire(usize),
}

impl Step {
    /// The request bytes of a command step (`None` for the others).
    fn request(&self) -> Option<Vec<u8>> {
        Some(match self {
            Step::Fail(..) | Step::Retire(_) | Step::TwoD(Op::Reset) => return None,
            Step::TwoD(op) => op.request(),
            Step::CtxCreate { ctx, capset } => cmd_ctx_create(*ctx, *capset, "prop"),
            Step::CtxDestroy(ctx) => cmd_ctx_destroy(*ctx),
            Step::CtxRes { ctx, res, attach } => cmd_ctx_res(*ctx, *res, *attach),
            Step::Create3d { id, target, w, h, depth } => cmd_create_3d(*id, *target, *w, *h, *depth),
            Step::Transfer { id, ctx, offset, to_host } => {
                cmd_transfer_3d(*id, *ctx, Box3d { x: 0, y: 0, z: 0, w: 4, h: 4, d: 1 }, *offset, *to_host)
            }
            Step::Submit { ctx, dwords, size } => cmd_submit(*ctx, &vec![0; *dwords], *size),
            Step::Fenced(step, fence_id, ring) => fenced(step.request()?, *fence_id, *ring),
        })
    }
}

fn ctx() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 1..3u32, 2 => 0..4u32, 1 => Just(u32::MAX)]
}

/// Resource ids, mostly the few the 3D steps share (so that they meet).
fn res() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 1..3u32, 2 => id()]
}

fn command_3d() -> impl Strategy<Value = Step> {
    let target = prop_oneof![Just(0u32), Just(TEXTURE_2D), Just(9u32)];
    let w = prop_oneof![8 => 0..80u32, 1 => Just(16385u32), 1 => Just(MAX_BUFFER_BYTES + 1)];
    let size = proptest::option::weighted(0.1, prop_oneof![Just(6u32), Just(MAX_SUBMIT_BYTES as u32 + 4)]);
    prop_oneof![
        3 => (ctx(), prop_oneof![Just(0u32), Just(1), Just(2), Just(7)])
            .prop_map(|(ctx, capset)| Step::CtxCreate { ctx, capset }),
        2 => ctx().prop_map(Step::CtxDestroy),
        3 => (ctx(), res(), any::<bool>()).prop_map(|(ctx, res, attach)| Step::CtxRes { ctx, res, attach }),
        5 => (res(), target, w, 0..16u32, 0..3u32)
            .prop_map(|(id, target, w, h, depth)| Step::Create3d { id, target, w, h, depth }),
        3 => (res(), ctx(), 0..4096u64, any::<bool>())
            .prop_map(|(id, ctx, offset, to_host)| Step::Transfer { id, ctx, offset, to_host }),
        3 => (ctx(), 0..8usize, size).prop_map(|(ctx, dwords, size)| Step::Submit { ctx, dwords, size }),
        // Backing commands more often than among the 2D ones: the 3D resources have them too.
        3 => (res(), proptest::collection::vec(entry(), 1..3))
            .prop_map(|(id, entries)| Step::TwoD(Op::Attach { id, entries, nr: None })),
        2 => res().prop_map(|id| Step::TwoD(Op::Detach(id))),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    proptest::sample::select(vec![
        Method::ContextCreate,
        Method::ContextDestroy,
        Method::ContextAttach,
        Method::ResourceCreate,
        Method::ResourceUnref,
        Method::AttachBacking,
        Method::DetachBacking,
        Method::Transfer,
        Method::Submit,
        Method::CreateFence,
    ])
}

fn step() -> impl Strategy<Value = Step> {
    let command = prop_oneof![4 => command_3d(), 3 => leaf_op().prop_map(Step::TwoD)];
    prop_oneof![
        6 => command.clone(),
        4 => (command.prop_filter("a command", |s| s.request().is_some()), 1..1000u64, proptest::option::of(0..2u8))
            .prop_map(|(step, id, ring)| Step::Fenced(Box::new(step), id, ring)),
        2 => (method(), prop_oneof![Just(Failure::Renderer), Just(Failure::Refused)])
            .prop_map(|(m, f)| Step::Fail(m, f)),
        3 => (0..4usize).prop_map(Step::Retire),
    ]
}

/// What the test knows of one chain.
#[derive(Debug)]
struct Chain {
    /// Where its response goes.
    resp: u64,
    /// Fence id and timeline (guest context and ring, or `None` for the global one).
    fence: Option<(u64, Option<(u32, u8)>)>,
    /// Held when the device was reset: never answered.
    dropped: bool,
}

const OTHER_RESPONSES: [u32; 3] =
    [VIRTIO_GPU_RESP_OK_CAPSET_INFO, VIRTIO_GPU_RESP_OK_CAPSET, VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID];

/// Checks the state after a step; `answered` is how many used entries were checked before.
fn check(
    g: &Gpu,
    fake: &Fake3d,
    d: &Driver<'_>,
    chains: &BTreeMap<u16, Chain>,
    answered: &mut usize,
    created_ctx: &BTreeSet<u32>,
) -> Result<(), TestCaseError> {
    let sum: u64 = g.resources().map(|(_, r)| r.host_memory()).sum();
    prop_assert_eq!(g.host_memory_used(), sum);
    prop_assert!(g.host_memory_used() <= PROP_MAX_MEM);
    let st = fake.state();
    // The fake has exactly the device's 3D resources, with the same backing, and was never
    // asked about another.
    prop_assert!(st.unknown_resources.is_empty(), "renderer saw resources {:?}", st.unknown_resources);
    let threed: Vec<u32> = g.resources().filter(|(_, r)| r.is_3d()).map(|(id, _)| id).collect();
    prop_assert_eq!(st.resources.keys().copied().collect::<Vec<_>>(), threed);
    for (id, r) in &st.resources {
        let backing = g.resource(*id).and_then(|r| r.backing.as_ref()).map(|b| b.len());
        prop_assert_eq!(r.backing.map(|len| len as u64), backing, "backing of {}", id);
    }
    for (c, r) in &st.attached {
        prop_assert!(st.contexts.contains_key(c) && st.resources.contains_key(r));
    }
    for c in st.contexts.keys() {
        prop_assert!(created_ctx.contains(c), "context {} the guest never created", c);
    }
    // Every chain answered at most once, with its fence echoed; the others are held.
    let used = d.used();
    let heads: BTreeSet<u32> = used.iter().map(|u| u.0).collect();
    prop_assert_eq!(heads.len(), used.len(), "a chain answered twice");
    for &(head, _) in &used[*answered..] {
        let chain = &chains[&(head as u16)];
        prop_assert!(!chain.dropped);
        let h: CtrlHdr = read_struct(&d.read(chain.resp, 24)).unwrap();
        let ty = h.type_.to_native();
        prop_assert!(RESPONSE_TYPES.contains(&ty) || OTHER_RESPONSES.contains(&ty), "response {:#x}", ty);
        match chain.fence {
            Some((id, _)) => {
                prop_assert!(h.flags.to_native() & VIRTIO_GPU_FLAG_FENCE != 0);
                prop_assert_eq!(h.fence_id.to_native(), id);
            }
            None => prop_assert_eq!(h.flags.to_native(), 0),
        }
    }
    *answered = used.len();
    let live = chains.values().filter(|c| !c.dropped).count();
    prop_assert_eq!(g.pending_fences(), live - used.len(), "a chain neither answered nor held");
    // Fenced responses in submission order on each timeline.
    let mut last: BTreeMap<Option<(u32, u8)>, u32> = BTreeMap::new();
    for &(head, _) in &used {
        if let Some((_, timeline)) = chains[&(head as u16)].fence {
            let prev = last.insert(timeline, head);
            prop_assert!(prev.is_none_or(|p| p < head), "fenced response {:?} overtook {}", prev, head);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_random_3d_commands(steps in proptest::collection::vec(step(), 1..60)) {
        run(&steps)?;
    }
}

/// Apply `steps` to a 3D device with the fake renderer, checking the invariants after each.
fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mem = new_mem();
    fill_guest_memory(&mem);
    let mut d = Driver::new(&mem);
    d.next_addr = DATA_START + 0x10000;
    let fake = Fake3d::new();
    let mut g = prop_gpu();
    g.enable_3d(fake.boxed());
    let mut chains: BTreeMap<u16, Chain> = BTreeMap::new();
    let mut answered = 0;
    let mut created_ctx = BTreeSet::new();
    for step in steps {
        match step {
            Step::Fail(method, failure) => fake.fail(*method, *failure),
            Step::Retire(n) => {
                g.retire_fences(&fake.retire(*n), &mut d.queue, &mem);
            }
            Step::TwoD(Op::Reset) => {
                let used: BTreeSet<u32> = d.used().iter().map(|u| u.0).collect();
                for (head, c) in chains.iter_mut() {
                    c.dropped |= !used.contains(&u32::from(*head));
                }
                g.reset();
                prop_assert_eq!(g.host_memory_used(), 0);
                prop_assert!(fake.state().contexts.is_empty() && fake.state().resources.is_empty());
                created_ctx.clear();
            }
            _ => {
                let req = step.request().unwrap();
                let (mut inner, mut fence) = (step, None);
                if let Step::Fenced(s, id, ring) = step {
                    let h: CtrlHdr = read_struct(&req).unwrap();
                    fence = Some((*id, ring.map(|r| (h.ctx_id.to_native(), r))));
                    inner = s;
                }
                if let Step::CtxCreate { ctx, .. } = inner {
                    created_ctx.insert(*ctx);
                }
                let head = d.next_desc;
                let (resp, _) = d.request(&req, 1100);
                chains.insert(head, Chain { resp, fence, dropped: false });
                g.process_ctrl_queue(&mut d.queue, &mem);
            }
        }
        check(&g, &fake, &d, &chains, &mut answered, &created_ctx)?;
    }
    // Every fence retires: every chain is answered, once.
    fake.clear_failures();
    g.retire_fences(&fake.retire_all(), &mut d.queue, &mem);
    check(&g, &fake, &d, &chains, &mut answered, &created_ctx)?;
    prop_assert_eq!(g.pending_fences(), 0);
    prop_assert_eq!(answered, chains.values().filter(|c| !c.dropped).count());
    // Unref everything: host memory is back to where it started.
    let ids: Vec<u32> = g.resources().map(|(id, _)| id).collect();
    for id in ids {
        prop_assert_eq!(exec(&mut g, &mem, &cmd_unref(id)), VIRTIO_GPU_RESP_OK_NODATA);
    }
    prop_assert_eq!(g.host_memory_used(), 0);
    prop_assert!(fake.state().resources.is_empty());
    Ok(())
}

/// Found by the property test: a fenced command whose host fence could not be created waits
/// for the responses before it (a ring's, here); a later global fence retiring must not answer
/// the command after it on the global timeline first, nor leave it held forever once the first
/// is answered.
#[test]
fn a_failed_fence_is_not_overtaken_on_its_timeline() {
    let ctx = || Step::CtxCreate { ctx: 1, capset: 0 };
    let steps = [
        ctx(),
        Step::Fenced(Box::new(ctx()), 1, Some(0)),
        Step::Fail(Method::CreateFence, Failure::Renderer),
        Step::Fenced(Box::new(ctx()), 1, None),
        Step::Fenced(Box::new(ctx()), 1, None),
        Step::CtxDestroy(1),
        Step::Retire(1),
    ];
    run(&steps).unwrap();
}

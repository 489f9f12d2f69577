//! Rule families (what a verdict reports) and word concepts (what keywords tag).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    InstructionOverride,
    SystemPromptExtraction,
    RoleplayJailbreak,
    FakeDelimiter,
    AuthorityClaim,
    PayloadSplitting,
    EncodedPayload,
    Obfuscation,
    ManyShot,
    RepeatedToken,
    DataExfiltration,
    PhishingPayload,
    Persuasion,
    Urgency,
    HypotheticalFrame,
    EmbeddedInstruction,
    OrderInData,
    PromptProbe,
    FakeAuthority,
}

pub(crate) const RULE_COUNT: usize = 19;

/// The families the learned model reads (`model::Signals`): all but `OrderInData`,
/// `PromptProbe` and `FakeAuthority`, which were written after the model was trained and are
/// kept out of its features.
pub(crate) const MODEL_RULE_COUNT: usize = 16;

impl Rule {
    pub(super) const ALL: [Rule; RULE_COUNT] = [
        Rule::InstructionOverride,
        Rule::SystemPromptExtraction,
        Rule::RoleplayJailbreak,
        Rule::FakeDelimiter,
        Rule::AuthorityClaim,
        Rule::PayloadSplitting,
        Rule::EncodedPayload,
        Rule::Obfuscation,
        Rule::ManyShot,
        Rule::RepeatedToken,
        Rule::DataExfiltration,
        Rule::PhishingPayload,
        Rule::Persuasion,
        Rule::Urgency,
        Rule::HypotheticalFrame,
        Rule::EmbeddedInstruction,
        Rule::OrderInData,
        Rule::PromptProbe,
        Rule::FakeAuthority,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Rule::InstructionOverride => "instruction_override",
            Rule::SystemPromptExtraction => "system_prompt_extraction",
            Rule::RoleplayJailbreak => "roleplay_jailbreak",
            Rule::FakeDelimiter => "fake_delimiter",
            Rule::AuthorityClaim => "authority_claim",
            Rule::PayloadSplitting => "payload_splitting",
            Rule::EncodedPayload => "encoded_payload",
            Rule::Obfuscation => "obfuscation",
            Rule::ManyShot => "many_shot",
            Rule::RepeatedToken => "repeated_token",
            Rule::DataExfiltration => "data_exfiltration",
            Rule::PhishingPayload => "phishing_payload",
            Rule::Persuasion => "persuasion",
            Rule::Urgency => "urgency",
            Rule::HypotheticalFrame => "hypothetical_frame",
            Rule::EmbeddedInstruction => "embedded_instruction",
            Rule::OrderInData => "order_in_data",
            Rule::PromptProbe => "prompt_probe",
            Rule::FakeAuthority => "fake_authority",
        }
    }
}

/// Word concepts tagged by the keyword automaton. At most 128 (a `u128` mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum C {
    Ignore,
    IgnorePost,
    Prior,
    Above,
    Instr,
    InstrCore,
    SysWeak,
    All,
    Your,
    My,
    Everything,
    Told,
    ToldYou,
    Learned,
    ContentObj,
    AndDo,
    Regardless,
    Despite,
    AndSay,
    StopAll,
    JustSay,
    NewInstr,
    Extract,
    WhatIs,
    WhatPost,
    TellPost,
    SysStrong,
    AboveText,
    Verbatim,
    Secret,
    SecretNeg,
    NegWord,
    Det,
    Transform,
    TheUser,
    Pii,
    Where,
    Live,
    PossS,
    DataDump,
    DanStrong,
    JailbreakWord,
    YouObj,
    NoLimitsStrong,
    NoLimits,
    ActAs,
    Pretend,
    YouAreNow,
    AnotherAi,
    PersonaAi,
    NoLongerBound,
    EvilPersona,
    DualResponse,
    StayChar,
    FromNowOn,
    IAm,
    CreatorNoun,
    AsPhrase,
    OfYour,
    IamGod,
    AuthRole,
    Org,
    Authorized,
    AuditFrame,
    ModeStrong,
    EnterV,
    ModeWord,
    Compliance,
    Compromised,
    LinkDirective,
    ResetPw,
    TellUser,
    Bribe,
    Social,
    Urgent,
    Threat,
    Hypo,
    Combine,
    DelimPhrase,
    SayVerb,
    NotImperative,
    AnswerNoun,
    Copula,
    HypoSay,
    This,
    DocNoun,
    Harmful,
    PossPost,
    Users,
    YourStore,
    PrivatePii,
    // Issue 22: verb-final languages, Han gaps, documents, fake notices.
    ExtractPost,
    Meta,
    YourSys,
    HanIgnore,
    HanScope,
    HanInstr,
    AuthNotice,
    NoteToAi,
    WhenYou,
    Instead,
    Of,
    // Orders inside data (`OrderInData`): kept out of the model's features (`ORDER_CONCEPTS`).
    MsgFromMe,
    ToYou,
    AiName,
    BeforeTask,
    DoFirst,
    AfterThat,
    OutOrder,
    OutOrderWeak,
    IfAsked,
    DataScope,
    PrintVerb,
    RepeatOrder,
    UserTurn,
    SysLabel,
    TodoLabel,
    DataVerb,
    // Probes for the system prompt and fake authority (`PromptProbe`, `FakeAuthority`): kept
    // out of the model's features too (`PROBE_CONCEPTS`).
    ProbeVerb,
    SysMore,
    ProbeQ,
    DisableV,
    LeakCue,
    TopicPrep,
    FakeAuth,
    Suspended,
    DevMode,
    SafetyNoun,
}

/// The concepts from `first` to `last` in declaration order, as a mask.
const fn concept_range(first: C, last: C) -> u128 {
    let mut mask = 0u128;
    let mut c = first as u8;
    while c <= last as u8 {
        mask |= 1u128 << c;
        c += 1;
    }
    mask
}

/// The concepts of `OrderInData`, masked out of `model::Signals` so the shipped model's inputs
/// stay what it was trained on.
pub(super) const ORDER_CONCEPTS: u128 = concept_range(C::MsgFromMe, C::DataVerb);

/// The concepts of `PromptProbe` and `FakeAuthority`, masked out of `model::Signals` likewise.
pub(super) const PROBE_CONCEPTS: u128 = concept_range(C::ProbeVerb, C::SafetyNoun);

/// Every concept the shipped model does not read.
pub(super) const UNMODELED_CONCEPTS: u128 = ORDER_CONCEPTS | PROBE_CONCEPTS;

const _: () = assert!(C::SafetyNoun as u8 <= 127, "at most 128 concepts (a u128 mask)");

pub(super) const fn m(c: C) -> u128 {
    1u128 << c as u8
}

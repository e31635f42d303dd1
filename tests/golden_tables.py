"""The hand-derived golden tables of tests/test_golden.py: the expected bytes of every named
special block (mxquant/conformance/cases.py) under each mode and element dtype. Nothing here
is computed: each case carries its arithmetic in its comment; the notation is explained in
tests/test_golden.py's docstring."""

import torch

E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2
F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
ALL = (F32, BF16, F16)
F32_BF16 = (F32, BF16)
NARROW = (BF16, F16)
ELEMS, MODES, LAYOUTS = (E4, E5), ("rceil", "floor"), ("linear", "swizzled")


def both(scale: int, data) -> dict:
    """Same expectation for floor and rceil."""
    return {"floor": (scale, data), "rceil": (scale, data)}


NAN_BLOCK = both(0xFF, {"*": 0x7F})  # a NaN/Inf anywhere: scale 0xFF, every element 0x7F
ZEROS = both(0x00, {"*": 0x00})
SIGNED_ZEROS = both(0x00, [0x00, 0x80] * 16)

# {element dtype: {case: [(input dtypes, {mode: (scale byte, element bytes)}), ...]}}
# Element bytes: {index: byte, "*": byte of every other index}, or a list of 32 bytes.
GOLDEN = {
    E4: {
        # All zeros: amax bits 0 -> exponent field 0 -> s = -127-8, clamped to -127: byte 0x00.
        "zero": [(ALL, ZEROS)],
        # +0/-0 alternating: amax 0 as above; each element 0 * 2**127 keeps its sign: 0x00 / 0x80.
        "signed_zero": [(ALL, SIGNED_ZEROS)],
        # A (negative) NaN at index 3, ones elsewhere: special block -> 0xFF and 32 x 0x7F.
        "one_nan": [(ALL, NAN_BLOCK)],
        "pos_inf": [(ALL, NAN_BLOCK)],   # +Inf at index 0: same as NaN.
        "neg_inf": [(ALL, NAN_BLOCK)],   # -Inf at index 31: same; the byte is 0x7F, not 0xFF.
        "all_nan": [(ALL, NAN_BLOCK)],
        # 448 = 1.75*2**8, -448, ones. floor: s = 8-8 = 0; rceil: 448/448 = 1 = 2**0, s = 0
        # (mantissa 0x600000 is not above 1.75's). Byte 0x7F. 448 -> 0x7E, -448 -> 0xFE, 1 -> 0x38.
        "max": [(ALL, both(0x7F, {0: 0x7E, 1: 0xFE, "*": 0x38}))],
        # 464 = 1.8125*2**8 (the 448/480 midpoint), ones. floor: s = 0 (0x7F); 464 is clamped
        # to 448 -> 0x7E (RNE alone would also tie to 448, mantissa 110 even); 1 -> 0x38.
        # rceil: 464/448 > 1 -> s = 1 (0x80); 464/2 = 232 = 1.8125*2**7, tie between 224 (110)
        # and 240 (111) -> even 224 = 0x70|6 = 0x76; 1/2 -> 0x30.
        "max_half_ulp_above": [(ALL, {"floor": (0x7F, {0: 0x7E, "*": 0x38}),
                                      "rceil": (0x80, {0: 0x76, "*": 0x30})})],
        # -480 = -1.875*2**8 (just past max), ones. floor: s = 0; clamp to -448 -> 0xFE; 1 -> 0x38.
        # rceil: s = 1 (0x80); -240 = -1.875*2**7 -> 0x80|0x70|7 = 0xF7; 1/2 -> 0x30.
        "max_ulp_above": [(ALL, {"floor": (0x7F, {0: 0xFE, "*": 0x38}),
                                 "rceil": (0x80, {0: 0xF7, "*": 0x30})})],
        # 508 = 1.984375*2**8, ones: floor puts amax*2**-s at 508 > 448 and saturates: s = 0,
        # 508 -> 448 = 0x7E. rceil: s = 1 (0x80); 254 lies between 240 and 256, nearer 256 = 2**8
        # -> (8+7)<<3 = 0x78; 1/2 -> 0x30.
        "floor_saturates": [(ALL, {"floor": (0x7F, {0: 0x7E, "*": 0x38}),
                                   "rceil": (0x80, {0: 0x78, "*": 0x30})})],
        # 0.4375 = 448*2**-10 = 1.75*2**-2, the rest 2**-10. floor: s = -2-8 = -10; rceil:
        # amax/448 = 2**-10 exactly, s = -10. Byte 117 = 0x75. 0.4375*2**10 = 448 -> 0x7E,
        # 2**-10*2**10 = 1 -> 0x38.
        "rceil_boundary": [(ALL, both(0x75, {0: 0x7E, "*": 0x38}))],
        # 0.4375 + 2**-25 (next fp32 up). floor: still s = -10 (0x75); 448 + 2**-15 -> clamp 448
        # = 0x7E; 1 -> 0x38. rceil: mantissa 0x600001 > 0x600000 -> s = -9 (0x76);
        # 224 + 2**-16 -> 224 = 1.75*2**7 = 0x76; 2**-10*2**9 = 0.5 -> 0x30.
        # bf16/fp16 inputs round the value to 0.4375: the boundary case.
        "rceil_just_above": [((F32,), {"floor": (0x75, {0: 0x7E, "*": 0x38}),
                                    "rceil": (0x76, {0: 0x76, "*": 0x30})}),
                             (NARROW, both(0x75, {0: 0x7E, "*": 0x38}))],
        # 0.4375 - 2**-25 (mantissa 0x5FFFFF): both modes s = -10 (0x75); 448 - 2**-15 -> 448.
        # bf16/fp16 round it to 0.4375: same bytes.
        "rceil_just_below": [(ALL, both(0x75, {0: 0x7E, "*": 0x38}))],
        # 1.75*2**-119 + 2**-142 (448*2**-127 and one fp32 ulp), zeros. floor: s = -119-8 = -127
        # (0x00); 448 + 2**-15 -> clamp 448 = 0x7E. rceil: mantissa 0x600001 -> s = -126 (0x01);
        # 224 + 2**-16 -> 224 = 0x76. (amax/448 computed in fp32 is 2**-127 + 0.57*2**-150, a
        # subnormal that rounds to 2**-127 and would wrongly give s = -127.) bf16 rounds the input
        # to 1.75*2**-119: s = -127 in both modes, 448 -> 0x7E. fp16: 0 -> the zero block.
        "rceil_min_scale": [((F32,), {"floor": (0x00, {0: 0x7E, "*": 0x00}),
                                      "rceil": (0x01, {0: 0x76, "*": 0x00})}),
                            ((BF16,), both(0x00, {0: 0x7E, "*": 0x00})),
                            ((F16,), ZEROS)],
        # +-2**-126, zeros. s = -126-8 = -134 (floor), also -134 (rceil, mantissa 0): clamped
        # to -127, byte 0x00 -- a real scale 2**-127, not a zero block: 2**-126*2**127 = 2 =
        # (1+7)<<3 = 0x40, -2 = 0xC0. fp16 input: +-2**-126 underflow to +-0: zeros, sign kept.
        "smallest_normal": [(F32_BF16, both(0x00, {0: 0x40, 1: 0xC0, "*": 0x00})),
                            ((F16,), both(0x00, {1: 0x80, "*": 0x00}))],
        # (2-2**-23)*2**127 (bits 0x7F7FFFFF), ones. floor: s = 127-8 = 119 -> 246 = 0xF6;
        # 511.99997 -> clamp 448 = 0x7E; 2**-119 -> 0x00. rceil: mantissa 0x7FFFFF -> s = 120
        # (0xF7); (2-2**-23)*2**7 = 256 - 2**-16 -> 256 = 0x78; ones -> 0x00.
        # bf16/fp16 inputs: the value rounds to +Inf -> NaN block.
        "fp32_max": [((F32,), {"floor": (0xF6, {0: 0x7E, "*": 0x00}),
                            "rceil": (0xF7, {0: 0x78, "*": 0x00})}),
                     (NARROW, NAN_BLOCK)],
        # 2**-149, -2**-130, 2**-127, (1-2**-23)*2**-126 (largest subnormal, amax), zeros.
        # Exponent field 0 -> s clamped to -127 (0x00) in both modes; elements * 2**127:
        # 2**-22 -> 0x00; -2**-3 -> 0x80|(4<<3) = 0xA0; 1 -> 0x38; 2 - 2**-22 -> 2 = 0x40.
        # bf16 input: 2**-149 -> 0, the largest subnormal rounds up to 2**-126: amax 2**-126,
        # s still -127, and the same bytes. fp16: everything underflows to +-0.
        "fp32_subnormals": [(F32_BF16, both(0x00, {0: 0x00, 1: 0xA0, 2: 0x38, 3: 0x40, "*": 0x00})),
                            ((F16,), both(0x00, {1: 0x80, "*": 0x00}))],
        # 2**-120, -1.5*2**-121, 2**-130, zeros: amax 2**-120 < 2**-119, so s = -128 in both
        # modes, clamped to -127 (0x00). Values are kept, not flushed: *2**127 -> 128 = 2**7 =
        # 14<<3 = 0x70; -96 = -1.5*2**6 = 0x80|(13<<3)|4 = 0xEC; 2**-3 = 0x20. fp16: all +-0.
        "tiny_block": [(F32_BF16, both(0x00, {0: 0x70, 1: 0xEC, 2: 0x20, "*": 0x00})),
                       ((F16,), both(0x00, {1: 0x80, "*": 0x00}))],
        # 1000, 1, -2.5, pi, zeros (docs/semantics.md's worked example). 1000 = 1.953125*2**9.
        # floor: s = 9-8 = 1 (0x80): 500 -> clamp 448 0x7E; 0.5 -> 0x30; -1.25 -> 0x80|0x38|2 =
        # 0xBA; pi/2 = 1.5708 > 1.5625 (midpoint of 1.5, 1.625) -> 1.625 = 0x38|5 = 0x3D.
        # rceil: 1000/448 = 2.23 -> s = 2 (0x81): 250 -> 256 = 0x78; 0.25 -> 0x28; -0.625 =
        # -1.25*2**-1 -> 0x80|0x30|2 = 0xB2; pi/4 = 1.5708*2**-1 -> 1.625*2**-1 = 0x35.
        # bf16/fp16 round pi to 3.140625: 1.5703 is still above 1.5625, same bytes.
        "worked_example": [(ALL, {"floor": (0x80, {0: 0x7E, 1: 0x30, 2: 0xBA, 3: 0x3D, "*": 0x00}),
                                  "rceil": (0x81, {0: 0x78, 1: 0x28, 2: 0xB2, 3: 0x35, "*": 0x00})})],
        # 448 (s = 0, 0x7F both modes), then e4m3 subnormal outputs: 2**-9 -> 0x01, 3*2**-9 ->
        # 0x03, 7*2**-9 (largest subnormal) -> 0x07, 2**-6 (smallest normal) -> (1<<3) = 0x08,
        # 0.75*2**-9 -> nearer 2**-9: 0x01; -2**-9 -> 0x81; 1.25*2**-9 -> 0x01.
        "subnormal_outputs": [(ALL, both(0x7F, {0: 0x7E, 1: 0x01, 2: 0x03, 3: 0x07, 4: 0x08,
                                                5: 0x01, 6: 0x81, 7: 0x01, "*": 0x00}))],
        # 448 (s = 0), then exact ties, rounded to even: 1.0625 between 1.000 and 1.125 -> 1.0
        # 0x38; 1.1875 between 1.125 (001) and 1.25 (010) -> 1.25 = 0x3A; 1.9375 between 1.875
        # (111) and 2.0 -> 2.0 = 0x40; -1.0625 -> 0xB8; 2**-10 between 0 and 2**-9 -> 0x00;
        # 1.5*2**-9 -> 2*2**-9 = 0x02; 2.5*2**-9 -> 0x02.
        "element_ties": [(ALL, both(0x7F, {0: 0x7E, 1: 0x38, 2: 0x3A, 3: 0x40, 4: 0xB8,
                                           5: 0x00, 6: 0x02, 7: 0x02, "*": 0x00}))],
        # 448 (s = 0), then -2**-12 (below half the smallest subnormal) -> -0 = 0x80; +2**-12 ->
        # 0x00; -2**-10 (a tie with 0) -> 0x80; -2**-149 -> 0x80 (bf16/fp16 turn it into -0
        # first: same byte).
        "signed_underflow": [(ALL, both(0x7F, {0: 0x7E, 1: 0x80, 2: 0x00, 3: 0x80, 4: 0x80, "*": 0x00}))],
    },
    E5: {
        "zero": [(ALL, ZEROS)],
        "signed_zero": [(ALL, SIGNED_ZEROS)],
        "one_nan": [(ALL, NAN_BLOCK)],
        "pos_inf": [(ALL, NAN_BLOCK)],
        "neg_inf": [(ALL, NAN_BLOCK)],
        "all_nan": [(ALL, NAN_BLOCK)],
        # 57344 = 1.75*2**15, -57344, ones: s = 15-15 = 0 in both modes (0x7F).
        # 57344 -> (30<<2)|3 = 0x7B, -57344 -> 0xFB, 1 -> 15<<2 = 0x3C.
        "max": [(ALL, both(0x7F, {0: 0x7B, 1: 0xFB, "*": 0x3C}))],
        # 61440 = 1.875*2**15 (just past max; the raw cast would round it to 65536 = Inf).
        # floor: s = 0; clamp -> 0x7B; 1 -> 0x3C. rceil: mantissa 0x700000 -> s = 1 (0x80);
        # 30720 = 1.875*2**14, tie between 1.75 (11) and 2.0 -> 2**15 = 30<<2 = 0x78; 0.5 -> 0x38.
        "max_half_ulp_above": [(ALL, {"floor": (0x7F, {0: 0x7B, "*": 0x3C}),
                                      "rceil": (0x80, {0: 0x78, "*": 0x38})})],
        # -65536 = -2**16, ones: both modes s = 1 (floor 16-15; rceil 65536/57344 = 1.14 -> 2**1)
        # 0x80; -2**15 -> 0xF8; 0.5 -> 0x38. fp16 input: -65536 overflows to -Inf -> NaN block.
        "max_ulp_above": [(F32_BF16, both(0x80, {0: 0xF8, "*": 0x38})), ((F16,), NAN_BLOCK)],
        # 65024 = 1.984375*2**15. floor: s = 0, saturates to 57344 0x7B; 1 -> 0x3C. rceil: s = 1
        # (0x80); 32512 = 1.984375*2**14 -> 2**15 = 0x78; 0.5 -> 0x38.
        "floor_saturates": [(ALL, {"floor": (0x7F, {0: 0x7B, "*": 0x3C}),
                                   "rceil": (0x80, {0: 0x78, "*": 0x38})})],
        # 56 = 57344*2**-10 = 1.75*2**5, the rest 2**-10: both modes s = 5-15 = -10 (0x75);
        # 56*2**10 = 57344 -> 0x7B; 1 -> 0x3C.
        "rceil_boundary": [(ALL, both(0x75, {0: 0x7B, "*": 0x3C}))],
        # 56 + 2**-18 (next fp32 up). floor: 0x75, 57344 + 2**-8 -> clamp 0x7B, 1 -> 0x3C.
        # rceil: s = -9 (0x76); 28672 + 2**-9 -> 28672 = 1.75*2**14 = (29<<2)|3 = 0x77; 0.5 -> 0x38.
        "rceil_just_above": [((F32,), {"floor": (0x75, {0: 0x7B, "*": 0x3C}),
                                    "rceil": (0x76, {0: 0x77, "*": 0x38})}),
                             (NARROW, both(0x75, {0: 0x7B, "*": 0x3C}))],
        "rceil_just_below": [(ALL, both(0x75, {0: 0x7B, "*": 0x3C}))],
        # 1.75*2**-112 + 2**-135 (57344*2**-127 and one ulp). floor: s = -112-15 = -127 (0x00);
        # 57344 + 2**-8 -> clamp 0x7B. rceil: s = -126 (0x01); 28672 + 2**-9 -> 28672 = 0x77.
        # bf16: 1.75*2**-112, s = -127 both, 0x7B. fp16: zeros.
        "rceil_min_scale": [((F32,), {"floor": (0x00, {0: 0x7B, "*": 0x00}),
                                      "rceil": (0x01, {0: 0x77, "*": 0x00})}),
                            ((BF16,), both(0x00, {0: 0x7B, "*": 0x00})),
                            ((F16,), ZEROS)],
        # +-2**-126: s = -126-15 = -141 -> -127 (0x00); *2**127 = 2 = 16<<2 = 0x40; -2 = 0xC0.
        "smallest_normal": [(F32_BF16, both(0x00, {0: 0x40, 1: 0xC0, "*": 0x00})),
                            ((F16,), both(0x00, {1: 0x80, "*": 0x00}))],
        # fp32 max, ones. floor: s = 127-15 = 112 -> 239 = 0xEF; clamp 57344 0x7B; 2**-112 -> 0.
        # rceil: s = 113 (0xF0); (2-2**-23)*2**14 -> 2**15 = 0x78.
        "fp32_max": [((F32,), {"floor": (0xEF, {0: 0x7B, "*": 0x00}),
                            "rceil": (0xF0, {0: 0x78, "*": 0x00})}),
                     (NARROW, NAN_BLOCK)],
        # As for e4m3, s = -127: 2**-22 -> 0 (below 2**-17); -2**-3 -> 0x80|(12<<2) = 0xB0;
        # 1 -> 0x3C; 2 - 2**-22 -> 2 = 0x40.
        "fp32_subnormals": [(F32_BF16, both(0x00, {0: 0x00, 1: 0xB0, 2: 0x3C, 3: 0x40, "*": 0x00})),
                            ((F16,), both(0x00, {1: 0x80, "*": 0x00}))],
        # s = -120-15 = -135 -> -127 (0x00): 128 = 22<<2 = 0x58; -96 = -1.5*2**6 =
        # 0x80|(21<<2)|2 = 0xD6; 2**-3 = 12<<2 = 0x30.
        "tiny_block": [(F32_BF16, both(0x00, {0: 0x58, 1: 0xD6, 2: 0x30, "*": 0x00})),
                       ((F16,), both(0x00, {1: 0x80, "*": 0x00}))],
        # 1000, 1, -2.5, pi. floor: s = 9-15 = -6 (121 = 0x79), x*64: 64000 -> clamp 0x7B;
        # 64 = 2**6 = 21<<2 = 0x54; -160 = -1.25*2**7 = 0x80|(22<<2)|1 = 0xD9; 201.06 =
        # 1.5708*2**7 -> 1.5 (below the 1.625 midpoint) = (22<<2)|2 = 0x5A.
        # rceil: 1000/57344 = 0.0174 in (2**-6, 2**-5] -> s = -5 (0x7A), x*32: 32000 =
        # 1.953*2**14 -> 2**15 = 0x78; 32 = 20<<2 = 0x50; -80 = -1.25*2**6 = 0xD5; 100.53 ->
        # 1.5*2**6 = (21<<2)|2 = 0x56. bf16/fp16's pi = 3.140625 gives the same bytes.
        "worked_example": [(ALL, {"floor": (0x79, {0: 0x7B, 1: 0x54, 2: 0xD9, 3: 0x5A, "*": 0x00}),
                                  "rceil": (0x7A, {0: 0x78, 1: 0x50, 2: 0xD5, 3: 0x56, "*": 0x00})})],
        # 57344 (s = 0), then 2**-16 -> 0x01, 3*2**-16 (largest subnormal) -> 0x03, 2**-14
        # (smallest normal) -> 1<<2 = 0x04, 0.75*2**-16 -> 0x01, -2**-16 -> 0x81, 1.25*2**-16 -> 0x01.
        "subnormal_outputs": [(ALL, both(0x7F, {0: 0x7B, 1: 0x01, 2: 0x03, 3: 0x04, 4: 0x01,
                                                5: 0x81, 6: 0x01, "*": 0x00}))],
        # 57344 (s = 0), then ties: 1.125 between 1.0 (00) and 1.25 -> 1.0 = 0x3C; 1.375 between
        # 1.25 (01) and 1.5 (10) -> 1.5 = 0x3E; 1.875 -> 2.0 = 0x40; -1.125 -> 0xBC; 2**-17 -> 0;
        # 1.5*2**-16 -> 0x02; 2.5*2**-16 -> 0x02.
        "element_ties": [(ALL, both(0x7F, {0: 0x7B, 1: 0x3C, 2: 0x3E, 3: 0x40, 4: 0xBC,
                                           5: 0x00, 6: 0x02, 7: 0x02, "*": 0x00}))],
        # 57344 (s = 0), -2**-19 -> 0x80, 2**-19 -> 0x00, -2**-17 (tie with 0) -> 0x80, -2**-149 -> 0x80.
        "signed_underflow": [(ALL, both(0x7F, {0: 0x7B, 1: 0x80, 2: 0x00, 3: 0x80, 4: 0x80, "*": 0x00}))],
    },
}

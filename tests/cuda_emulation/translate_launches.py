"""Rewrites every `kernel<<<grid, block, ...>>>(args)` of a .cu file as
`emulated_launch(dim3(grid), dim3(block), "kernel", [&] { kernel(args); })` (see cuda_runtime.h here)."""

import sys


def split_top_level(text):
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "(<[{"
        depth -= ch in ")>]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + [current]


def kernel_name_start(src, end):
    """Start of the (possibly templated) kernel name that ends at `end`."""
    depth, k = 0, end
    while k > 0:
        ch = src[k - 1]
        if ch == ">":
            depth += 1
        elif ch == "<":
            depth -= 1
        elif depth == 0 and not (ch.isalnum() or ch in "_:"):
            break
        k -= 1
    return k


def matching_paren(src, open_at):
    depth = 0
    for k in range(open_at, len(src)):
        depth += src[k] == "("
        depth -= src[k] == ")"
        if depth == 0:
            return k
    raise ValueError("unbalanced parentheses after a launch")


def translate(src):
    out, i = [], 0
    while (start := src.find("<<<", i)) >= 0:
        name_end = start  # a formatter may break the line between the kernel's name and <<<
        while src[name_end - 1].isspace():
            name_end -= 1
        name_at = kernel_name_start(src, name_end)
        config_end = src.index(">>>", start)
        args_end = matching_paren(src, config_end + 3)
        grid, block = split_top_level(src[start + 3 : config_end])[:2]
        args = src[config_end + 4 : args_end]
        out.append(src[i:name_at])
        name = src[name_at:name_end]
        label = name.split("<")[0].strip()
        out.append(f'emulated_launch(dim3({grid}), dim3({block}), "{label}", [&] {{ {name}({args}); }})')
        i = args_end + 1
    return "".join(out) + src[i:]


if __name__ == "__main__":
    sys.stdout.write(translate(open(sys.argv[1]).read()))

"""The reversible residual stack (RevNet; Reformer section 3) as one autograd Function: activation memory
independent of depth, the inputs of every layer rebuilt from its outputs in the backward.
"""

from __future__ import annotations

import torch


class _ReversibleStack(torch.autograd.Function):
    """All layers with activation memory independent of depth: the forward keeps only the last layer's graph; the
    backward goes through it, then rebuilds each earlier layer's inputs from its outputs (``x2 = y2 - g(y1)``,
    ``x1 = y1 - f(x2)``), replaying dropout from the layer's seeds and LSH from the buckets the forward drew, and
    returns the gradients of the two streams and of every layer parameter (so ``torch.autograd.grad`` sees them
    too)."""

    @staticmethod
    def forward(ctx, x1, x2, layers, layer_inputs, hidden_states, *params):
        last = len(layers) - 1
        for i, (layer, inputs) in enumerate(zip(layers, layer_inputs)):
            if hidden_states is not None:
                hidden_states.append(x2)
            if i == last:
                # The last layer keeps its graph, so the backward starts without recomputing it (a third of the
                # step's layer work at 2 layers). Its activations are one layer's, which the backward's recomputation
                # holds anyway, so the peak does not grow with depth.
                x1_in, x2_in = x1.detach().requires_grad_(), x2.detach().requires_grad_()
                with torch.enable_grad():
                    attn, inputs["buckets"] = layer.attention_block(x2_in, inputs["real"], inputs["rand"],
                                                                    inputs["seeds"])
                    y1 = x1_in + attn
                    y2 = x2_in + layer.feed_forward_block(y1, inputs["seeds"])
                ctx.last_layer = (x1_in, x2_in, y1, y2)
                x1, x2 = y1.detach(), y2.detach()
                break
            with torch.no_grad():
                attn, inputs["buckets"] = layer.attention_block(x2, inputs["real"], inputs["rand"], inputs["seeds"])
                x1 = x1 + attn
                x2 = x2 + layer.feed_forward_block(x1, inputs["seeds"])
        ctx.layers, ctx.layer_inputs, ctx.params = layers, layer_inputs, params
        return x1, x2

    @staticmethod
    def backward(ctx, grad_y1, grad_y2):
        index = {id(p): i for i, p in enumerate(ctx.params)}
        param_grads = [None] * len(ctx.params)

        def add(params, grads):
            for p, g in zip(params, grads):
                if g is not None:
                    i = index[id(p)]
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g

        # The last layer: straight through the graph its forward kept.
        x1_in, x2_in, y1, y2 = ctx.last_layer
        ctx.last_layer = None  # free its activations before the next layer is recomputed
        params = [p for p in ctx.layers[-1].parameters() if p.requires_grad]
        grads = torch.autograd.grad([y1, y2], [x1_in, x2_in, *params], [grad_y1, grad_y2], allow_unused=True)
        del y1, y2
        grad_y1, grad_y2 = grads[0], grads[1]
        add(params, grads[2:])
        y1, y2 = x1_in.detach(), x2_in.detach()
        for layer, inputs in zip(reversed(ctx.layers[:-1]), reversed(ctx.layer_inputs[:-1])):
            ff_params = [p for p in layer.feed_forward.parameters() if p.requires_grad]
            with torch.enable_grad():
                y1_ = y1.detach().requires_grad_()
                g_out = layer.feed_forward_block(y1_, inputs["seeds"])
                grads = torch.autograd.grad(g_out, [y1_, *ff_params], grad_y2, allow_unused=True)
            x2 = y2 - g_out.detach()
            grad_y1 = grad_y1 + grads[0]  # dL/dy1, all of it: the identity path and through g
            add(ff_params, grads[1:])
            attn_params = [p for p in layer.attention.parameters() if p.requires_grad]
            with torch.enable_grad():
                x2_ = x2.detach().requires_grad_()
                f_out, _ = layer.attention_block(x2_, inputs["real"], inputs["rand"], inputs["seeds"],
                                                 buckets=inputs["buckets"])
                grads = torch.autograd.grad(f_out, [x2_, *attn_params], grad_y1, allow_unused=True)
            x1 = y1 - f_out.detach()
            grad_y2 = grad_y2 + grads[0]  # dL/dx2 = dL/dy2 + (df/dx2)^T dL/dy1
            add(attn_params, grads[1:])
            y1, y2 = x1, x2  # dL/dx1 = dL/dy1
        return (grad_y1, grad_y2, None, None, None, *param_grads)
